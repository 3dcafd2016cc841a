"""``pets web``: a small page over the registry's model (predict, similar photos, versions).

The top layer of ``petsml`` beside the CLI: it may import tracking, nothing imports it but the
CLI. Every asset is served from ``static/`` (no CDN: it works offline).
"""
