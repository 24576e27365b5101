"""What the command line and scikit-learn users get: the classifier and how it is trained,
model files, metrics, pictures, the seed notebook's network and the estimator."""
