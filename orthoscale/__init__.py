"""orthoscale: scaling studies of Riemannian gradient descent on orthonormal deep linear networks.

The modules at this level are the math core (plain torch); ``orthoscale.study`` wires it to
Hydra, Ray Tune, Optuna and MLflow.
"""
__version__ = "0.1.0"
