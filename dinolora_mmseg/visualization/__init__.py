"""Figures of the tools: feature PCA colours (:mod:`.feature_pca`), robustness tables and
plots (:mod:`.robustness_report`). Not imported by ``import dinolora_mmseg``."""
from .feature_pca import make_grid, pca_maps

__all__ = ['make_grid', 'pca_maps']
