from .weights import cached_download, is_url, load_weights

__all__ = ['cached_download', 'is_url', 'load_weights']
