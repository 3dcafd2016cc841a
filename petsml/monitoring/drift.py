"""A window against the reference: every detector, and one verdict.

The detectors (each its own module, each saying why it is built so):

==========  ============================================================  ======================
name        what it compares                                              fires when
==========  ============================================================  ======================
input       embeddings: MMD, permutation p-value, on PCA (:mod:`.mmd`)    p < alpha share
prediction  softmax outputs: per-class KS + Bonferroni (:mod:`.bbsd`)     p < alpha share
confidence  mean top-1 probability, unsure share (:mod:`.confidence`)     a threshold is passed
image       width, height, format, greyscale (:mod:`.image_drift`)        p < alpha share
==========  ============================================================  ======================

The verdict is ``drift`` when a detector named in ``monitor.alert`` fires, ``ok`` when none
does, ``too few`` when the window has fewer than ``monitor.min_window`` distinct photos (no
test is trusted on fewer). The tests in ``alert`` split ``monitor.alpha`` equally (Bonferroni),
so an unchanged stream raises a false alarm in at most ``alpha`` of its windows; a detector not
in ``alert`` is still run and reported, tested at the same share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from petsml.monitoring.bbsd import bbsd_test
from petsml.monitoring.confidence import confidence_check
from petsml.monitoring.domain_classifier import domain_classifier_test
from petsml.monitoring.image_drift import image_drift_test
from petsml.monitoring.mmd import PCA, mmd_test
from petsml.monitoring.reference import Reference
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.window import Window

Verdict = Literal["drift", "ok", "too few"]
# The tests' BLAS calls run on one thread: their matrices are small (hundreds of rows), and on
# the project's shared 2-core machines two OpenBLAS threads made one PCA 100x slower (0.26 s
# against 2 ms) whenever anything else was running, as heads.py measured for the solvers.
BLAS_THREADS = 1


@dataclass(frozen=True)
class DetectorResult:
    name: str  # input | prediction | confidence | image
    method: str  # what was computed, in words
    p_value: float | None  # None for the confidence rule
    threshold: float  # the alpha share the p-value is held to, or the confidence drop allowed
    drifted: bool
    alerting: bool  # counts in the verdict (named in monitor.alert)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    verdict: Verdict
    n: int  # predictions in the window
    n_unique: int  # distinct photos tested
    detectors: tuple[DetectorResult, ...]
    reference_size: int

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the alerting detectors that fired."""
        return tuple(d.name for d in self.detectors if d.drifted and d.alerting)

    def detector(self, name: str) -> DetectorResult | None:
        return next((d for d in self.detectors if d.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "n": self.n, "n_unique": self.n_unique,
            "reference_size": self.reference_size, "drifted": list(self.drifted),
            "detectors": [d.as_dict() for d in self.detectors],
        }  # fmt: skip


def _input(ref, win, settings: MonitorSettings, alpha: float, rng) -> DetectorResult | None:
    if ref.embeddings.shape[1] == 0 or win.embeddings.shape[1] != ref.embeddings.shape[1]:
        return None  # no embeddings recorded (or another backbone's): MMD cannot run
    # fitted on both sides together, labels unseen: a relabelling then leaves the reduction
    # as it was, which is what makes the permutation p-value exact (mmd.py says more)
    pca = PCA.fit(np.concatenate([ref.embeddings, win.embeddings]), settings.pca_components)
    z_ref, z_win = pca.transform(ref.embeddings), pca.transform(win.embeddings)
    result = mmd_test(z_ref, z_win, settings.permutations, rng)
    details: dict[str, Any] = {
        "mmd2": result.mmd2, "bandwidth": result.bandwidth, "pca_components": result.components,
        "permutations": result.permutations,
    }  # fmt: skip
    if settings.domain_classifier:
        domain = domain_classifier_test(z_ref, z_win, settings.seed)
        details.update(domain_auc=domain.auc, domain_p_value=domain.p_value)
    return DetectorResult(
        "input", f"MMD (Gaussian kernel, median bandwidth) on PCA-{result.components} "
        "embeddings, permutation p-value", result.p_value, alpha, result.p_value < alpha,
        "input" in settings.alert, details,
    )  # fmt: skip


def detect_drift(reference: Reference, window: Window, settings: MonitorSettings) -> DriftResult:
    """Every detector on ``window`` (deduplicated by content hash when ``monitor.deduplicate``)
    against ``reference``; seeded by ``monitor.seed``, so a rerun gives the same p-values."""
    if len(window):
        reference.check_matches(window.sample.class_names)
    tested = window.deduplicated() if settings.deduplicate else window
    ref, win = reference.sample, tested.sample
    if len(win) < settings.min_window or len(ref) < 2:
        return DriftResult("too few", len(window), len(win), (), len(ref))
    with threadpool_limits(BLAS_THREADS):
        return _detect(ref, win, settings, len(window))


def _detect(ref, win, settings: MonitorSettings, n: int) -> DriftResult:
    rng = np.random.default_rng(settings.seed)
    alpha = settings.alpha_per_test()
    detectors: list[DetectorResult] = []
    found = _input(ref, win, settings, alpha, rng)
    if found is not None:
        detectors.append(found)
    bbsd = bbsd_test(ref.probabilities, win.probabilities)
    detectors.append(DetectorResult(
        "prediction", "per-class Kolmogorov-Smirnov on softmax outputs (BBSD), Bonferroni over "
        f"{len(ref.class_names)} classes", bbsd.p_value, alpha, bbsd.p_value < alpha,
        "prediction" in settings.alert,
        {"worst_class": ref.class_names[bbsd.worst_class],
         "worst_class_p_value": float(bbsd.p_values[bbsd.worst_class]),
         "class_p_values": dict(zip(ref.class_names, map(float, bbsd.p_values), strict=True))},
    ))  # fmt: skip
    conf = confidence_check(
        ref.confidence, win.confidence, settings.low_confidence, settings.confidence_drop,
        settings.low_share_rise,
    )  # fmt: skip
    detectors.append(DetectorResult(
        "confidence", f"mean top-1 probability (drop over {settings.confidence_drop}) and share "
        f"under {settings.low_confidence} (rise over {settings.low_share_rise})", None,
        settings.confidence_drop, conf.drifted, "confidence" in settings.alert,
        {"reference_mean": conf.reference_mean, "window_mean": conf.window_mean,
         "reference_low_share": conf.reference_low_share,
         "window_low_share": conf.window_low_share},
    ))  # fmt: skip
    image = image_drift_test(ref, win)
    detectors.append(DetectorResult(
        "image", "width/height (KS), format and greyscale share (Fisher exact), Bonferroni over 4",
        image.p_value, alpha, image.p_value < alpha, "image" in settings.alert,
        {"p_values": image.p_values, "shares": image.shares},
    ))  # fmt: skip
    fired = any(d.drifted and d.alerting for d in detectors)
    return DriftResult("drift" if fired else "ok", n, len(win), tuple(detectors), len(ref))
