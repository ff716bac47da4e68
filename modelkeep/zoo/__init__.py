"""The model zoo: classic architectures as specs, registered by name.

Each family is one readable file (``lenet.py``, ``resnet.py``, ...) around a
config dataclass; ``get_spec(name, **overrides)`` returns the validated
``ModelSpec``, which saves and loads without any code from here. Building it
(``modelkeep.build``) gives a ``SpecModule`` with the transfer interface
``features`` / ``head`` / ``forward_head`` / ``reset_head``. This package never
imports torch.
"""
from ._base import ZOO, ZooModel, get_spec, list_models, register_model
from . import alexnet, bert, efficientnet, lenet, mlp, mobilenet, recurrent, resnet, transformer, vgg  # noqa: F401,E402  (register the models)
from ._resolve import resolve_spec

__all__ = ["ZOO", "ZooModel", "get_spec", "list_models", "register_model", "resolve_spec"]
