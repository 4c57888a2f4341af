"""Errors whose advice can be read by Python callers and by command-line users.

A loader's error says how to fix the problem: point it at a copy, or allow a
download. A Python caller does that with an argument (``root=``,
``download=True``), a command-line user with a flag (``--data-dir``,
``--download``). The loaders write each piece of advice once, as a template
with ``{root}`` and ``{download}`` placeholders; the error's ``str`` names the
arguments, and :func:`command_line_message` the flags.
"""

from __future__ import annotations

from gradlab.data.download import DownloadError

#: Each placeholder as a loader argument and as the command line's flag.
FORMS: dict[str, tuple[str, str]] = {
    "root": ("pass root=", "give --data-dir "),
    "root_origin": ("the root argument", "--data-dir"),
    "download": ("pass download=True", "give --download"),
    "cache_dir": ("pass cache_dir=", "give --cache-dir "),
    "offline": (
        "point at an existing copy with DataConfig(data_dir=<folder>); offline choices: "
        "DataConfig('fsdd', data_dir=<folder with FSDD's recordings>) (e.g. ../shared/data/fsdd), "
        "or a synthetic task: DataConfig('distance') (or 'adding', 'copy-memory')",
        "point at an existing copy with --data-dir <folder>; offline choices: "
        "--dataset fsdd --data-dir <folder with FSDD's recordings> (e.g. ../shared/data/fsdd), "
        "or a synthetic task: --dataset distance (or adding, copy-memory)",
    ),
}


def phrase(template: str, *, flags: bool) -> str:
    """``template`` with its placeholders as loader arguments (``flags`` False) or command-line flags."""
    return template.format(**{name: forms[1 if flags else 0] for name, forms in FORMS.items()})


class _TwoForms:
    """Keeps the advice template, so the command line can print its own form."""

    template: str

    def _init_template(self, template: str) -> str:
        self.template = template
        return phrase(template, flags=False)


class DataNotFoundError(_TwoForms, FileNotFoundError):
    """A dataset is not where the loader looked, and downloading it is off (or impossible)."""

    def __init__(self, template: str) -> None:
        super().__init__(self._init_template(template))


class DataDownloadError(_TwoForms, DownloadError):
    """A dataset is missing and downloading it failed."""

    def __init__(self, template: str) -> None:
        super().__init__(self._init_template(template))


class DataCacheError(_TwoForms, OSError):
    """The feature cache cannot be written."""

    def __init__(self, template: str) -> None:
        super().__init__(self._init_template(template))


def command_line_message(error: BaseException) -> str:
    """``error``'s message with its advice in flags (its ``str`` if it carries no advice template)."""
    if isinstance(error, _TwoForms):
        return phrase(error.template, flags=True)
    return str(error)


def escape(text: object) -> str:
    """``text`` (a path, a user's word) safe to put into an advice template."""
    return str(text).replace("{", "{{").replace("}", "}}")
