"""Explanations of predictions: per raw input feature its contribution, the base value and the
output space they add up to, exact where the model allows (sagegate.explain.tree, the linear closed
form) and Shapley values over a background sample otherwise (sagegate.explain.sampling)."""

from sagegate.explain.explainer import Explainer, NoExplainer, build_explainer

__all__ = ["Explainer", "NoExplainer", "build_explainer"]
