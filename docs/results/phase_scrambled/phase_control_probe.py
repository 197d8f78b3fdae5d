import torch

from monai_neurosql.metrics import extract_features, kernel_distance, load_domain_encoder
from monai_neurosql.metrics.controls import blur

torch.set_num_threads(1)
R = "runs/bench_demo128"  # the 128 px run (was /work/runs/s28/d128 here)
c = torch.load(f"{R}/tensor_cache/demo_ebbbc8e5e0c31f242fde.pt", weights_only=True)
train, ref = c["train_images"].float(), c["reference_images"].float()
g = torch.Generator().manual_seed(0)
real = train[torch.randperm(len(train), generator=g)[:504]]
mask = real > 0.05

def phase_scramble(x, cutoff):
    """keep |F| everywhere and the phase below `cutoff` cycles per image; random phase above; inside the mask."""
    f = torch.fft.rfft2(x)
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h)[:, None] * h
    fx = torch.fft.rfftfreq(w)[None, :] * w
    high = (fy ** 2 + fx ** 2).sqrt() > cutoff
    noise = torch.fft.rfft2(torch.rand(x.shape, generator=g))
    phase = torch.where(high, torch.angle(noise), torch.angle(f))
    out = torch.fft.irfft2(torch.polar(f.abs(), phase), s=(h, w))
    return torch.where(mask, out.clamp(0, 1), torch.zeros(()))

sets = {}
for cut in (4, 8, 16, 32):
    sets[f"phase_scrambled_above_{cut}"] = phase_scramble(real, cut)
sets["lowpass4_plus_noise"] = torch.where(mask, (blur(real, 4) + (real - blur(real, 4))[torch.randperm(504, generator=g)]).clamp(0, 1), torch.zeros(()))
torch.save(sets, "runs/probe/ctrl_sets2.pt")
spaces = {"domain": f"{R}/domain_encoder.pt", "classifier": f"{R}/domain_encoder_classifier.pt",
          "autoencoder": f"{R}/domain_encoder_autoencoder.pt"}
rows = {k: {} for k in sets}
for space, path in spaces.items():
    enc = load_domain_encoder(path)
    fr = extract_features(enc, ref)
    for k, x in sets.items():
        rows[k][space] = kernel_distance(fr, extract_features(enc, x))
print("| set | " + " | ".join(spaces) + " |")
for k, r in rows.items():
    print(f"| {k} | " + " | ".join(f"{v['kid']:.2f} ± {v['kid_se']:.2f}" for v in r.values()) + " |")
from monai_neurosql.visualize import save_grid_png

save_grid_png(torch.cat([real[:6]] + [s[:6] for s in sets.values()]), "runs/probe/ctrl2.png", nrow=6, scale=1)
