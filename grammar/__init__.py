"""The .ein grammar, shipped as data (``ein.lark``); installed as ``einattn.grammar``."""

from importlib import resources


def grammar_text() -> str:
    """The Lark grammar of the .ein language."""
    return resources.files(__name__).joinpath("ein.lark").read_text(encoding="utf-8")
