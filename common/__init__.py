"""mmsa.common: the plumbing every package shares, and nothing else.

Errors that the command lines turn into one line (:mod:`.errors`), the strict TOML-to-dataclass
loader (:mod:`.settings`), the CLI runner (:mod:`.cli`) and the lookup of pretrained parts shipped
inside Python packages (:mod:`.packages`). Standard library only (plus ``tomli`` on Python 3.10):
``mmsa.model``, ``mmsa.media``, ``mmsa.training`` and ``mmsa.monitor`` all import it.
"""
