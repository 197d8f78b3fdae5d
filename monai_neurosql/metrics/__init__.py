from __future__ import annotations

from .classifier import classification_scores, downstream_classifier, train_classifier
from .features import ProxyFeatureNet, extract_features, load_pretrained_weights
from .fid import INCEPTION_WEIGHTS, InceptionFeatures, frechet_distance, inception_fid, proxy_fid
from .lpips_metric import VGG16_WEIGHTS, LPIPSMetric, lpips_distance
from .memorization import memorization_audit, nearest_neighbours
from .precision_recall import precision_recall
from .report import evaluation_report, load_images
from .ssim_metrics import ms_ssim_diversity, ms_ssim_settings, paired_ssim, random_pairs, reconstruction_ssim

__all__ = [
    "INCEPTION_WEIGHTS",
    "InceptionFeatures",
    "LPIPSMetric",
    "ProxyFeatureNet",
    "VGG16_WEIGHTS",
    "classification_scores",
    "downstream_classifier",
    "evaluation_report",
    "extract_features",
    "frechet_distance",
    "inception_fid",
    "load_images",
    "load_pretrained_weights",
    "lpips_distance",
    "memorization_audit",
    "ms_ssim_diversity",
    "ms_ssim_settings",
    "nearest_neighbours",
    "paired_ssim",
    "precision_recall",
    "proxy_fid",
    "random_pairs",
    "reconstruction_ssim",
    "train_classifier",
]
