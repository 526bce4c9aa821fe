from .weights import cached_download, hub_cache_path, is_url, load_weights

__all__ = ['cached_download', 'hub_cache_path', 'is_url', 'load_weights']
