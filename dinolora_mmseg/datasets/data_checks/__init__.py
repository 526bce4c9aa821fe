"""Checks of a config's datasets and of single image files, before anything runs."""
from .dataloaders import check_dataloaders, check_dataset, check_test_dataloader
from .image_file import read_image_file

__all__ = ['check_dataloaders', 'check_dataset', 'check_test_dataloader', 'read_image_file']
