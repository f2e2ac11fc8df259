"""model/: the r3d_18 trunk + hash head (no Ray, no distributed collectives: imports only torch/torchvision)."""
from model.backbone import (KINETICS_MEAN, KINETICS_STD, BACKBONES, ModelError, WeightsError, build_backbone,
                            kinetics_norm, resolve_weights)
from model.config import ModelConfig
from model.hashnet import HashNet, build_from_config, build_hash_net
from model.load import ClipGeometry, LoadedHashNet, export_program, load_hash_net

__all__ = ["BACKBONES", "KINETICS_MEAN", "KINETICS_STD", "ClipGeometry", "HashNet", "LoadedHashNet", "ModelConfig",
           "ModelError", "WeightsError", "build_backbone", "build_from_config", "build_hash_net", "export_program",
           "kinetics_norm", "load_hash_net", "resolve_weights"]
