"""Models for ncscope (Su et al. 2024): BN-MLP, small CNN, VGG11-BN and PreActResNet18 (CIFAR
and ImageNette-160 variants), each with a leading :class:`Normalize`, a final ``nn.Linear``
named ``classifier`` (penultimate features = ``"classifier:in"``) and the paper's layer-wise
taps in ``tap_layers``. Each takes ``head="normalized"`` (``ModelConfig.head``): an
:class:`L2Normalize` ``feature_norm`` and a cosine :class:`NormalizedHead` ``classifier``
(Yaras et al., NeurIPS 2022; :mod:`.normalized`). Any other model works too:
:func:`find_classifier` finds its final ``nn.Linear`` and :func:`logits_of` reads logits from
its output (:mod:`.adapters`). Imports only :mod:`ncscope.data` (normalisation statistics).
"""

from ncscope.models.adapters import adapt_output, as_dataset, logits_of
from ncscope.models.cnn import SmallCNN
from ncscope.models.convert import load_reference_state_dict, load_weights
from ncscope.models.heads import (
    NormalizedModel,
    classifier_name,
    classifier_of,
    default_taps,
    find_classifier,
    linear_map,
    penultimate_layer,
    prepare_model,
)
from ncscope.models.mlp import BNMLP
from ncscope.models.normalize import Normalize
from ncscope.models.normalized import DEFAULT_HEAD_SCALE, HEADS, L2Normalize, NormalizedHead
from ncscope.models.preactresnet import (
    PreActBlock,
    PreActResNet,
    preactresnet18,
    preactresnet18_imagenette,
)
from ncscope.models.registry import (
    MODELS,
    ModelSpec,
    available_models,
    create_model,
    register_model,
)
from ncscope.models.vgg import VGG, VGG11_CFG, vgg11_bn, vgg11_bn_imagenette

__all__ = [
    "BNMLP",
    "DEFAULT_HEAD_SCALE",
    "HEADS",
    "MODELS",
    "VGG",
    "VGG11_CFG",
    "L2Normalize",
    "ModelSpec",
    "Normalize",
    "NormalizedHead",
    "NormalizedModel",
    "PreActBlock",
    "PreActResNet",
    "SmallCNN",
    "adapt_output",
    "as_dataset",
    "available_models",
    "classifier_name",
    "classifier_of",
    "create_model",
    "default_taps",
    "find_classifier",
    "linear_map",
    "load_reference_state_dict",
    "load_weights",
    "logits_of",
    "penultimate_layer",
    "preactresnet18",
    "preactresnet18_imagenette",
    "prepare_model",
    "register_model",
    "vgg11_bn",
    "vgg11_bn_imagenette",
]
