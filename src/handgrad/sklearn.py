"""handgrad's scikit-learn estimators, drop-ins for ``MLPClassifier`` and ``MLPRegressor``.
Needs the ``sklearn`` extra (scikit-learn 1.6 or later)."""

from handgrad.app.estimators import HandgradClassifier, HandgradRegressor

__all__ = ["HandgradClassifier", "HandgradRegressor"]
