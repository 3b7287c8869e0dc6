"""Image sources: images loaded batch by batch by index, from memory, a decoded cache on disk, or the files."""

from weakdml.data.sources.base import ImageSource, SourceView, all_images, unlabeled, view
from weakdml.data.sources.cache import CachedSource, build_cache, cache_key
from weakdml.data.sources.files import FileSource
from weakdml.data.sources.memory import ImageSet

__all__ = ["CachedSource", "FileSource", "ImageSet", "ImageSource", "SourceView", "all_images", "build_cache",
           "cache_key", "unlabeled", "view"]
