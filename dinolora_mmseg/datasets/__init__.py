from .dataset_tree import leaf_configs, leaf_datasets  # noqa: F401
from .transforms import *  # noqa: F401,F403
