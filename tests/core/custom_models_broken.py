"""A factory module that fails while it is imported (``custom_models_broken:tiny``)."""

raise RuntimeError("this module needs a GPU driver")
