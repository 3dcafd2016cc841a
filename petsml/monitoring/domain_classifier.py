"""Input drift, second opinion: can a classifier tell window photos from reference photos?

A logistic regression on the PCA-reduced embeddings, scored out of fold (stratified 5-fold),
gives an AUC: 0.5 when reference and window are alike, towards 1.0 as they separate. Rabanser
et al. found this domain classifier weaker than MMD as a test but useful to read: "a classifier
tells 9 in 10 window photos from validation photos" says more to a person than an MMD². Its
p-value is the one-sided Mann-Whitney test of the out-of-fold scores (the AUC is that test's U
statistic scaled); reported only, never part of the verdict (``monitor.domain_classifier``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

FOLDS = 5


@dataclass(frozen=True)
class DomainResult:
    auc: float
    p_value: float


def domain_classifier_test(
    reference: np.ndarray, window: np.ndarray, seed: int = 0
) -> DomainResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference, window])
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    folds = min(FOLDS, len(reference), len(window))
    if folds < 2:
        return DomainResult(float("nan"), 1.0)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=splits, method="decision_function")
    test = mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater")
    auc = float(test.statistic) / (len(window) * len(reference))
    return DomainResult(auc, float(test.pvalue))
