"""Reading and writing photos: the public face of ``engine.io`` (decode, encode, the Picture they share)."""

from engine.io.atomic import OutputExistsError
from engine.io.decode import load_image
from engine.io.encode import SUPPORTED_WRITE_FORMATS, output_path_for, save_image
from engine.io.picture import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    Picture,
    UnsupportedImageError,
    picture_from_array,
    to_uint,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "SUPPORTED_WRITE_FORMATS",
    "CorruptImageError",
    "ImageError",
    "ImageTooLargeError",
    "OutputExistsError",
    "Picture",
    "UnsupportedImageError",
    "load_image",
    "output_path_for",
    "picture_from_array",
    "save_image",
    "to_uint",
]
