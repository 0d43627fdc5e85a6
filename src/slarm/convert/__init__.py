"""slarm-convert: raw episodes into a LeRobot dataset (v3.0, or v2.1 for OpenPI).

    from slarm.convert import convert
    convert(["raw/so101_pickplace_v1"], "datasets/so101_pickplace_v1", size=(224, 224))
"""

__all__ = ["Summary", "convert"]


def __getattr__(name: str):
    """convert and Summary, imported on first use: slarm-inspect and the worker processes import
    modules of this package without needing the writers'."""
    if name in __all__:
        from . import conversion

        return getattr(conversion, name)
    raise AttributeError(name)
