"""handgrad's scikit-learn estimators. Needs the ``sklearn`` extra (scikit-learn 1.6 or
later)."""

from handgrad.app.estimators import HandgradClassifier

__all__ = ["HandgradClassifier"]
