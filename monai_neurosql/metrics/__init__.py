from __future__ import annotations

from .classifier import classification_scores, downstream_classifier, train_classifier
from .controls import CONTROLS, NEGATIVE_CONTROLS, blur, control_flags, control_sets, phase_scramble
from .domain_features import (
    AUTO_INPUT_SIZE,
    AUTO_MEMBERS,
    DOMAIN_ENCODER_KINDS,
    DomainEncoder,
    DomainEncoderEnsemble,
    auto_encoder_settings,
    auto_mismatch,
    load_domain_encoder,
    save_domain_encoder,
    train_domain_encoder,
)
from .features import ProxyFeatureNet, extract_features, load_pretrained_weights
from .fid import fd_imagenet_inception, fd_medicalnet, fd_radimagenet, fid, frechet_distance, proxy_fid
from .kid import kernel_distance, kid_difference
from .lpips_metric import VGG16_WEIGHTS, LPIPSMetric, lpips_distance
from .memorization import MemorizationAudit, audit_minimum, memorization_audit, nearest_neighbours
from .precision_recall import density_coverage, precision_recall
from .pretrained_features import (
    FID_INCEPTION_WEIGHTS,
    IMAGENET_INCEPTION_WEIGHTS,
    MEDICALNET_WEIGHTS,
    RADIMAGENET_WEIGHTS,
    FIDInceptionFeatures,
    ImageNetInceptionFeatures,
    MedicalNetResNet10Features,
    RadImageNetResNet50Features,
)
from .report import evaluation_report, load_images
from .sample_counts import MIN_SAMPLES, below_minimum, minimum_samples
from .scores import METRIC_SPECS, SampleScorer
from .ssim_metrics import ms_ssim_diversity, ms_ssim_settings, paired_ssim, random_pairs, reconstruction_ssim

__all__ = [
    "AUTO_INPUT_SIZE",
    "AUTO_MEMBERS",
    "CONTROLS",
    "DOMAIN_ENCODER_KINDS",
    "FID_INCEPTION_WEIGHTS",
    "IMAGENET_INCEPTION_WEIGHTS",
    "MEDICALNET_WEIGHTS",
    "METRIC_SPECS",
    "MIN_SAMPLES",
    "NEGATIVE_CONTROLS",
    "RADIMAGENET_WEIGHTS",
    "VGG16_WEIGHTS",
    "DomainEncoder",
    "DomainEncoderEnsemble",
    "FIDInceptionFeatures",
    "ImageNetInceptionFeatures",
    "LPIPSMetric",
    "MedicalNetResNet10Features",
    "MemorizationAudit",
    "ProxyFeatureNet",
    "RadImageNetResNet50Features",
    "SampleScorer",
    "audit_minimum",
    "auto_encoder_settings",
    "auto_mismatch",
    "below_minimum",
    "blur",
    "classification_scores",
    "control_flags",
    "control_sets",
    "density_coverage",
    "downstream_classifier",
    "evaluation_report",
    "extract_features",
    "fd_imagenet_inception",
    "fd_medicalnet",
    "fd_radimagenet",
    "fid",
    "frechet_distance",
    "kernel_distance",
    "kid_difference",
    "load_domain_encoder",
    "load_images",
    "load_pretrained_weights",
    "lpips_distance",
    "memorization_audit",
    "minimum_samples",
    "ms_ssim_diversity",
    "ms_ssim_settings",
    "nearest_neighbours",
    "paired_ssim",
    "phase_scramble",
    "precision_recall",
    "proxy_fid",
    "random_pairs",
    "reconstruction_ssim",
    "save_domain_encoder",
    "train_classifier",
    "train_domain_encoder",
]
