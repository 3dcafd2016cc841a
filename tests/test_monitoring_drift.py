"""The drift detectors: they flag real shifts, stay quiet on unchanged traffic, and say why.

Generated, seeded traffic (``tests.monitoring.Traffic``): one fixed "model" and photos drawn
through it, so a shift is a change of the photos only. The false-alarm check runs many
unchanged windows and holds their share of alarms to the budget ``alpha`` promises; the
statistics are also checked against direct computations, so a wrong formula fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from petsml.monitoring.bbsd import bbsd_test
from petsml.monitoring.drift import detect_drift
from petsml.monitoring.mmd import PCA, mmd_test
from petsml.monitoring.reference import Reference, ReferenceError, build_reference
from petsml.monitoring.settings import MonitorSettings, MonitorSettingsError
from tests.monitoring import CLASSES, Draw, Traffic, settings_with, window_of

SETTINGS = settings_with(permutations=300)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return Traffic(seed=0)


@pytest.fixture(scope="module")
def reference(traffic) -> Reference:
    return traffic.reference(n=300, seed=1)


def test_unchanged_traffic_raises_few_false_alarms(traffic, reference):
    windows = 40
    alarms = [
        detect_drift(reference, window_of(traffic.draw(80, seed=1000 + i)), SETTINGS)
        for i in range(windows)
    ]
    assert all(r.verdict in ("ok", "drift") for r in alarms)
    rate = sum(r.verdict == "drift" for r in alarms) / windows
    # alpha = 0.05 is the promise; 40 windows allow a little sampling noise over it
    assert rate <= 0.10, [r.drifted for r in alarms if r.verdict == "drift"]


@pytest.mark.parametrize(
    ("shift", "detector"),
    [
        ({"classes": (0, 1, 2)}, "prediction"),  # label shift: three classes only
        ({"offset": 0.4}, "input"),  # every embedding moved: covariate shift
        ({"noise": 3.0}, "confidence"),  # photos far from every class: the model is unsure
    ],
)
def test_a_real_shift_is_flagged_by_the_detector_that_should_see_it(
    traffic, reference, shift, detector
):
    result = detect_drift(reference, window_of(traffic.draw(100, seed=7, **shift)), SETTINGS)
    assert result.verdict == "drift"
    assert detector in result.drifted, result.as_dict()


def test_image_properties_are_reported_and_alert_only_when_asked(traffic, reference):
    grey = window_of(traffic.draw(100, seed=8, grey=0.6))
    quiet = detect_drift(reference, grey, SETTINGS)
    image = quiet.detector("image")
    assert image is not None and image.drifted and not image.alerting
    assert image.details["p_values"]["greyscale"] < 1e-6
    assert quiet.verdict == "ok"
    loud = detect_drift(reference, grey, settings_with(permutations=300, alert=("image",)))
    assert loud.verdict == "drift" and loud.drifted == ("image",)


def test_duplicates_count_once_and_a_small_window_gets_no_verdict(traffic, reference):
    draw = traffic.draw(10, seed=9)
    window = window_of(draw)
    repeated = window_of(
        type(draw)(np.repeat(draw.probabilities, 20, 0), np.repeat(draw.embeddings, 20, 0),
                   [f for f in draw.facts for _ in range(20)])
    )  # fmt: skip
    assert len(repeated) == 200 and repeated.n_unique == 10
    result = detect_drift(reference, repeated, SETTINGS)
    assert (result.verdict, result.n, result.n_unique) == ("too few", 200, 10)
    assert detect_drift(reference, window, settings_with(min_window=5)).verdict in ("ok", "drift")


def test_the_tests_split_alpha_by_bonferroni():
    settings = settings_with(alpha=0.06, alert=("input", "prediction", "confidence", "image"))
    assert settings.alpha_per_test() == pytest.approx(0.02)  # three tests; confidence is a rule
    assert settings_with(alert=("confidence",)).alpha_per_test() == pytest.approx(0.05)


def test_mmd_matches_the_unbiased_estimate_and_its_p_value_is_a_permutation_share():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(6, 3)) + 0.7
    result = mmd_test(x, y, permutations=2000, rng=np.random.default_rng(1))
    z = np.concatenate([x, y])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * np.median(d2[np.triu_indices(15, 1)])))
    m, n = 9, 6
    expected = ((k[:m, :m].sum() - m) / (m * (m - 1)) + (k[m:, m:].sum() - n) / (n * (n - 1))
                - 2 * k[:m, m:].mean())  # fmt: skip
    assert result.mmd2 == pytest.approx(expected, rel=1e-9)
    assert 1 / 2001 <= result.p_value <= 1
    far = mmd_test(x, y + 10, permutations=200)
    assert far.p_value == pytest.approx(1 / 201)  # no relabelling does as well as the truth


def test_pca_keeps_the_reference_directions_of_most_variance():
    rng = np.random.default_rng(2)
    wide = rng.normal(size=(50, 200)) * np.r_[10.0, 5.0, np.ones(198) * 0.1]
    pca = PCA.fit(wide, 2)  # Gram route (n < d)
    assert abs(pca.basis[0, 0]) > 0.99 and abs(pca.basis[1, 1]) > 0.99
    tall = rng.normal(size=(500, 5)) * np.r_[1.0, 8.0, 1.0, 1.0, 1.0]
    assert abs(PCA.fit(tall, 1).basis[0, 1]) > 0.99  # covariance route (n > d)


def test_bbsd_is_the_smallest_class_p_value_times_the_class_count():
    rng = np.random.default_rng(3)
    ref = rng.dirichlet(np.ones(4), 200)
    win = rng.dirichlet([5.0, 1, 1, 1], 80)
    result = bbsd_test(ref, win)
    assert result.worst_class == 0
    assert result.p_value == pytest.approx(min(1.0, 4 * result.p_values.min()))
    with pytest.raises(ValueError, match="different models"):
        bbsd_test(ref, win[:, :3])


def test_reference_round_trips_and_refuses_another_models_window(traffic, reference, tmp_path):
    path = tmp_path / "reference.npz"
    reference.save(path)
    loaded = Reference.load(path)
    assert loaded.sample.class_names == CLASSES and loaded.model == reference.model
    np.testing.assert_array_equal(loaded.sample.embeddings, reference.sample.embeddings)
    np.testing.assert_array_equal(loaded.sample.format, reference.sample.format)
    with pytest.raises(ReferenceError, match="class list"):
        loaded.check_matches(("cat", "dog"))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ReferenceError, match="bad.npz"):
        Reference.load(tmp_path / "bad.npz")


def test_domain_classifier_auc_separates_a_shift_and_not_the_same_traffic(traffic, reference):
    settings = settings_with(permutations=100, domain_classifier=True)
    same = detect_drift(reference, window_of(traffic.draw(120, seed=11)), settings)
    moved = detect_drift(reference, window_of(traffic.draw(120, seed=11, offset=0.5)), settings)
    auc_same = same.detector("input").details["domain_auc"]
    auc_moved = moved.detector("input").details["domain_auc"]
    assert auc_same < 0.65 < 0.8 < auc_moved


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"alpha": 1.5}, "monitor.alpha"),
        ({"alert": ["input", "vibes"]}, "monitor.alert"),
        ({"window": "many"}, "monitor.window"),
        ({"keep_photos": "yes"}, "monitor.keep_photos"),
        ({"windw": 100}, "monitor.windw: unknown"),
        ({"rotation": "shred"}, "monitor.rotation"),
    ],
)
def test_bad_settings_name_the_key(values, message):
    with pytest.raises(MonitorSettingsError, match=message):
        MonitorSettings.from_mapping({**settings_with().as_dict(), **values})


def test_settings_from_params_keep_types():
    shipped = settings_with().as_dict()
    settings = MonitorSettings.from_mapping({**shipped, "window": 100, "alert": ["input"],
                                             "max_mb": 5})  # fmt: skip
    assert settings.window == 100 and settings.alert == ("input",) and settings.max_mb == 5.0
    assert settings.permutations == shipped["permutations"]
    assert MonitorSettings.from_mapping(settings.as_dict()) == settings


def test_a_small_reference_in_many_dimensions_does_not_make_false_alarms():
    """The embeddings' reduction must not see which rows are the reference: a PCA fitted on a
    few dozen reference rows of a 300-d embedding alone alarms on most unchanged windows."""
    rng = np.random.default_rng(12)
    dim, settings = 300, settings_with(permutations=200, min_window=10)

    def sample(n: int) -> Draw:
        probs = rng.dirichlet(np.ones(len(CLASSES)), n).astype(np.float32)
        facts = Traffic(0).draw(n, seed=int(rng.integers(1 << 30))).facts
        return Draw(probs, rng.normal(size=(n, dim)).astype(np.float32), facts)

    ref = sample(40)
    reference = build_reference(ref.probabilities, ref.embeddings, ref.facts, CLASSES)
    p_values = [
        detect_drift(reference, window_of(sample(40)), settings).detector("input").p_value
        for _ in range(30)
    ]
    assert sum(p < settings.alpha_per_test() for p in p_values) <= 3, sorted(p_values)[:5]
    assert 0.25 < float(np.median(p_values)) < 0.75  # p-values spread as they should


def test_params_yaml_owns_every_monitor_value():
    """MonitorSettings has no defaults: the shipped params.yaml builds it, and a mapping
    missing a key is refused naming it."""
    from dataclasses import MISSING, fields

    assert all(f.default is MISSING and f.default_factory is MISSING
               for f in fields(MonitorSettings))  # fmt: skip
    shipped = settings_with()
    assert shipped.window == 200 and shipped.alert == ("input", "prediction", "confidence")
    values = shipped.as_dict()
    del values["window"]
    with pytest.raises(MonitorSettingsError, match=r"monitor\.window: missing"):
        MonitorSettings.from_mapping(values)


def test_a_bad_monitor_value_in_params_names_the_key():
    from petsml.config import ConfigError
    from petsml.testing.project import shipped_params

    with pytest.raises(ConfigError, match=r"monitor\.min_window"):
        shipped_params({"monitor.min_window": 1})
    with pytest.raises(ConfigError, match=r"monitor\.alert"):
        shipped_params({"monitor.alert": ["input", "vibes"]})
