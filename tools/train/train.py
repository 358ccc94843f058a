"""Trains the demo model end to end on procedural scenes and writes it to models/demo/.

    python3 tools/train/train.py [--out models/demo] [--work /tmp/vkd-demo-train] [--stage all]

Stages (each reads the previous ones' files from --work): tokenizer, clip, clip_blur, vae,
vae_shapes, unet, export; and, not part of "all", import --from DIR (the tokenizer, CLIP and VAE of an exported model,
so that the U-Net can be retrained alone).
Everything is seeded; CPU only (Debian python3-torch + libopenblas0-pthread, see README.md here).
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time

# OpenBLAS (libopenblas0-pthread) runs a thread per core in every process unless told otherwise, on
# top of PyTorch's own threads: with two single-threaded stages side by side that is four busy
# threads on two cores. One BLAS thread a process is 1.4x faster (a U-Net step of batch 48, two
# threads: 0.56 s instead of 0.81 s; a CLIP step beside the VAE stage: 2.1 s instead of 2.9 s).
# Set before numpy and torch load the library; the stages' processes inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def keep_freed_memory():
    """glibc returns every freed block above its mmap threshold (32 MiB at most) to the kernel, so
    each step maps its large activations afresh and faults them in page by page: a VAE step of
    batch 16 took 3.7 s, 1.6 s of it in the kernel. Serving them from the heap and keeping up to
    1 GiB of its free top: 0.97 s."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc
    libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap'd blocks
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


keep_freed_memory()  # in every process: the parallel stages and the U-Net workers import this file

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import nets  # noqa: E402
from plot import plot, png_bytes  # noqa: E402
import scenes  # noqa: E402

STAGES = ("tokenizer", "clip", "clip_blur", "vae", "vae_shapes", "unet", "export", "taesd")  # in order
# not part of "all": the tokenizer, CLIP and VAE read back from an exported model (--from), so
# that the U-Net can be retrained against them without an hour of CLIP and VAE training
EXTRA_STAGES = ("import",)
STEPS = {"clip": 1000, "clip_blur": 600, "vae": 800, "vae_shapes": 1900, "unet": 6000, "taesd": 3000}
LATENT_POOL = 12000
UNET_BATCH, UNET_LR = 48, 1e-3
UNET_PAIR_PROB = 0.1  # two-shape scenes in the U-Net's latent pool (0.25 in the other stages)
CLIP_VISION = dict(d=192, layers=4, heads=3, mlp=768, sep=144)  # the text tower: width 128, 3 layers, 2 heads
UNET = dict(mc=64, mult=(1, 2, 2), blocks=1, attn_levels=(2,), ctx=128, heads=8)  # attention at 4x4 (and the middle) only: at 8x8 too a step costs 2x
# The decoder's residual stream keeps absolute values, but norm_out (GroupNorm(32) just before
# conv_out) normalises it: with k channels a group, a flat background keeps k - 2 degrees of
# freedom a group, so k = 1 or 2 erases its colour (VAEs with 32 and 64 channels there stalled at
# L1 0.3). Hence 128 channels (k = 4, as SD's VAE) at full resolution, 32 below, and no encoder
# ResBlocks (blocks=0; the decoder has one a level) to pay for them.
VAE = dict(ch=32, mult=(4, 1, 1), blocks=0, z=4)  # 64x64x3 <-> 16x16x4
SD_SCALE = 0.18215  # the C pipeline decodes latent / 0.18215, as for SD 1.x
# TAESD's decoder layout distilled from the VAE's decoder, for previews: 2 stages (the VAE's 4x),
# 32 channels (a quarter of TAESD's FLOPs: minutes of training on 2 cores)
TAESD = dict(width=32, stages=2)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def batch(rng, n, train=True, pair_prob=0.25):
    imgs, caps, labels = zip(*(scenes.draw_scene(rng, train, pair_prob) for _ in range(n)))
    return np.stack(imgs), list(caps), list(labels)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


# the main process of --stage all, for the stage processes it starts (None: not started by it)
MAIN_PID = int(os.environ["VKD_TRAIN_PARENT"]) if "VKD_TRAIN_PARENT" in os.environ else None


def exit_if_orphaned(parent):
    """Called every step of a process that `parent` (a pid; None: no check) started: once that
    process is gone (killed), stop, rather than train on unseen."""
    if parent is not None and os.getppid() != parent:
        sys.exit("train.py: the main process is gone")


def steps_of(args, name):
    return max(2, int(STEPS[name] * args.scale))


def save_state(model, path, extra=None):
    torch.save({"model": model.state_dict(), **(extra or {})}, path)


# ------------------------------------------------------------------ stages
def stage_tokenizer(args):
    rng = np.random.default_rng(1)
    caps = [scenes.draw_scene(rng)[1] for _ in range(20000)] + [" ".join(scenes.all_words())]
    merges, vocab = bpe.train(caps)
    bpe.save(merges, vocab, args.work)
    log(f"tokenizer: {len(merges)} merges, {len(vocab)} tokens")


def contrastive(logits, target):
    """CLIP's symmetric cross-entropy over a similarity matrix (rows images, columns captions)."""
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean())


def clip_loss(model, tok, imgs, caps, groups=()):
    """The batch's contrastive loss plus the mean of the same loss over each diagonal block that
    `groups` gives (the lengths of the batch's first runs of scenes, each run with distinct
    captions): a shape group's hard negatives get a softmax of their own instead of 4 of the
    batch's ~125 entries. -> (loss, batch accuracy)."""
    ids = torch.tensor([tok.encode(c, 24) for c in caps])  # causal: positions after the EOT never reach pooled
    _, pooled = model.text_model(ids, tok.eot)
    t = F.normalize(model.text_projection(pooled), dim=-1)
    v = F.normalize(model.visual_projection(model.vision_model(nets.clip_pixels(imgs))), dim=-1)
    logits = model.logit_scale.clamp(max=math.log(100)).exp() * v @ t.T
    same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)  # repeated captions share
    target = same / same.sum(1, keepdim=True)
    loss = contrastive(logits, target)
    if groups:
        ends = np.cumsum(groups)
        loss = loss + sum(contrastive(logits[e - n:e, e - n:e], torch.eye(n)) for n, e in zip(groups, ends)) / len(groups)
    return loss, (logits.argmax(1) == torch.arange(len(caps))).float().mean().item()


def stage_clip(args):
    """CLIP, both towers from scratch: batches of 16 shape groups (scenes that differ only in their
    shape, so the contrastive loss can only fall by telling shapes apart, on both sides) plus 48
    ordinary scenes, each group also contrasted on its own (clip_loss); AdamW 5e-4, warm-up +
    cosine, the temperature at 20x the learning rate."""
    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    tok = bpe.Tokenizer(args.work)
    model = nets.Clip(len(tok.vocab), vision=CLIP_VISION)
    rest = [p for n, p in model.named_parameters() if n != "logit_scale"]
    opt = torch.optim.AdamW([{"params": rest, "mult": 1.0}, {"params": [model.logit_scale], "mult": 20.0, "weight_decay": 0.0}],
                            lr=5e-4, weight_decay=0.05)
    hist, seconds = clip_steps("clip", model, opt, tok, steps_of(args, "clip"), lambda: clip_batch(rng))
    save_state(model, f"{args.work}/clip_phase1.pt", {"loss": hist, "seconds": seconds})


def clip_batch(rng, blur=0.0, n_groups=16, n_ordinary=48):
    """A CLIP step's batch: `n_groups` shape groups and `n_ordinary` scenes, each image blurred
    with probability `blur` (blur_noise). -> (uint8 images, captions, shape group lengths)."""
    groups = shape_groups(rng, n_groups)
    imgs, caps, _ = zip(*(sum(groups, []) + [scenes.draw_scene(rng) for _ in range(n_ordinary)]))
    imgs = np.stack(imgs)
    m = rng.random(len(imgs)) < blur
    if m.any():
        imgs[m] = blur_noise(rng, imgs[m])
    return imgs, list(caps), [len(g) for g in groups]


def blur_noise(rng, u8):
    """uint8 [B, H, W, 3] -> the same, Gaussian-blurred (sigma uniform in 0.5-1.6 px each image, a
    separable 7-tap kernel, edges replicated), plus pixel noise (std 3 of 255)."""
    B, H, W, _ = u8.shape
    x = torch.as_tensor(u8).permute(0, 3, 1, 2).float().reshape(1, 3 * B, H, W)
    sigma = torch.from_numpy(rng.uniform(0.5, 1.6, B)).float().repeat_interleave(3)
    k = torch.exp(-torch.arange(-3, 4).float().square() / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(3 * B, 1, 1, 7), groups=3 * B)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(3 * B, 1, 7, 1), groups=3 * B)
    x = x.reshape(B, 3, H, W) + torch.from_numpy(rng.normal(0.0, 3.0, (B, 3, H, W))).float()
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def stage_clip_blur(args):
    """Phase 2 of CLIP: the vision tower and its projection fine-tuned on batches of 32 shape
    groups and no ordinary scenes (colour is learnt by then; the shapes are what phase 1 leaves
    wrong), half of the images blurred (blur_noise); the text tower and the temperature frozen, so
    the U-Net's context is phase 1's bit for bit (stage_unet reads clip_phase1.pt and runs beside
    this stage in --stage all). AdamW 5e-4 (phase 1's rate), warm-up + cosine. Phase 1 sees only
    crisp scenes and takes slightly soft ones (a VAE round trip, a generated picture) for other
    shapes: a blurred large star for a circle, a ring for a star."""
    torch.manual_seed(31)
    rng = np.random.default_rng(31)
    tok, model, prev = load_clip(args, "clip_phase1.pt")
    tuned = [p for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection."))]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tuned:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": tuned, "mult": 1.0}], lr=5e-4, weight_decay=0.05)  # clip_steps: 5e-4 x mult
    hist, seconds = clip_steps("clip_blur", model, opt, tok, steps_of(args, "clip_blur"), lambda: clip_batch(rng, 0.5, 32, 0))
    extra = {k: v for k, v in prev.items() if k not in ("model", "loss", "seconds")}  # "vision", "imported_from" carry over
    save_state(model, f"{args.work}/clip.pt", dict(extra, loss=prev["loss"] + hist, seconds=prev["seconds"] + seconds))


def clip_steps(name, model, opt, tok, total, draw):
    """The contrastive loop (AdamW, warm-up + cosine from 5e-4 times each group's "mult"); draw()
    gives a step's (uint8 images, captions, shape group lengths). Every 250 steps: zero-shot on
    300 held-out scenes.
    -> (loss history, seconds)."""
    hist, t0 = [], time.time()
    for step in range(total):
        exit_if_orphaned(MAIN_PID)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, 5e-4, 50) * g.get("mult", 1.0)
        imgs, caps, groups = draw()
        loss, acc = clip_loss(model, tok, imgs, caps, groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(loss.item())
        if step % 50 == 0 or step == total - 1:
            log(f"{name} {step}/{total} loss {loss.item():.4f} (50-step mean {np.mean(hist[-50:]):.4f}) batch acc {acc:.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.time() - t0:.0f} s)")
        if (step + 1) % 250 == 0 or step == total - 1:
            zs = zero_shot(model.eval(), tok, 300, seed=70)
            model.train()
            log(f"{name} {step + 1}: zero-shot shape {zs['shape']:.3f} colour {zs['colour']:.3f}")
    return hist, time.time() - t0


def shape_groups(rng, groups):
    """Lists of scenes, five a list (four where a pair is held out), that differ only in their
    shape: one colour, size, position, background and template a list."""
    names, out = list(scenes.COLOURS), []
    for _ in range(groups):
        colour = rng.choice(names)
        bg = rng.choice([n for n in names + list(scenes.BACKGROUND_ONLY) if n != colour])
        size, pos, t = rng.choice(list(scenes.SIZES)), rng.choice(scenes.POSITIONS), rng.choice(scenes.SINGLE_TEMPLATES)
        out.append([scenes.draw_single(rng, colour, s, size, pos, bg, t) for s in scenes.SHAPES if scenes.allowed(colour, s, True)])
    return out


def vae_step(model, opt, imgs, shape_weight):
    """One step: L1 + 1/2 MSE (pixels away from the image's median colour weighted by 1 +
    shape_weight: the shapes are a small part of each image) + 1e-6 KL, sampled posterior."""
    x = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    rec = model.decode(z)
    kl = 0.5 * torch.sum(mean ** 2 + logvar.exp() - 1 - logvar, (1, 2, 3)).mean()
    w = 1 + shape_weight * ((x - x.flatten(2).median(2).values[..., None, None]).abs().amax(1, keepdim=True) > 0.1).float()
    err = rec - x
    l1 = err.abs().mean()
    loss = (w * (err.abs() + 0.5 * err ** 2)).mean() + 1e-6 * kl
    opt.zero_grad()
    loss.backward()
    opt.step()
    return l1.item(), kl.item()


def train_vae(args, name, seed, init, batch_size, peak, shape_weight, out):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nets.VAE(**VAE)
    with torch.no_grad():  # start with a narrow posterior (std 0.05), not unit noise on every latent
        model.quant_conv.bias[VAE["z"]:] = -6.0
    prev = torch.load(f"{args.work}/{init}") if init else {"loss": [], "seconds": 0.0}
    if init:
        model.load_state_dict(prev["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.0)
    total, hist = steps_of(args, name), list(prev["loss"])
    t0 = time.time()
    for step in range(total):
        exit_if_orphaned(MAIN_PID)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, peak, 50)
        l1, kl = vae_step(model, opt, batch(rng, batch_size)[0], shape_weight)
        hist.append(l1)
        if step % 50 == 0 or step == total - 1:
            log(f"{name} {step}/{total} l1 {l1:.4f} kl {kl:.1f} ({time.time() - t0:.0f} s)")
    save_state(model, f"{args.work}/{out}", {"loss": hist, "seconds": prev["seconds"] + time.time() - t0})


def stage_vae(args):
    """Phase 1 of the VAE: plain reconstruction, batch 8."""
    train_vae(args, "vae", 3, None, 8, 5e-4, 0.0, "vae_phase1.pt")


def stage_vae_shapes(args):
    """Phase 2 (from phase 1): batch 16, the shapes' pixels weighted 11x. Phase 1 alone learns the
    background colours and leaves the shapes as faint smudges (they are 3-20% of the pixels)."""
    train_vae(args, "vae_shapes", 13, "vae_phase1.pt", 16, 1e-3, 10.0, "vae.pt")


def load_clip(args, name="clip.pt"):
    """-> (tokenizer, CLIP (no dropout: its mode does not matter), the stage file's dict)."""
    tok = bpe.Tokenizer(args.work)
    st = torch.load(f"{args.work}/{name}")
    clip = nets.Clip(len(tok.vocab), vision=st.get("vision", CLIP_VISION))  # imported: plain patch kernel
    clip.load_state_dict(st["model"])
    return tok, clip.eval(), st


def load_vae(args):
    """-> (VAE, the stage file's dict)."""
    st = torch.load(f"{args.work}/vae.pt")
    vae = nets.VAE(**VAE)
    vae.load_state_dict(st["model"])
    return vae.eval(), st


@torch.no_grad()
def text_context(clip, tok, caps):
    ids = torch.tensor([tok.encode(c) for c in caps])
    return clip.text_model(ids, tok.eot)[0]


def stage_unet(args):
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    tok, clip, _ = load_clip(args, "clip_phase1.pt")  # the text tower only: clip_blur leaves it alone
    vae, _ = load_vae(args)
    n = max(256, int(LATENT_POOL * min(1.0, args.scale * 10)))
    t0 = time.time()
    lat, ctx = [], []
    with torch.no_grad():
        for i in range(0, n, 256):
            imgs, caps, _ = batch(rng, min(256, n - i), pair_prob=UNET_PAIR_PROB)
            x = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
            lat.append(vae.encode(x)[0])
            ctx.append(text_context(clip, tok, caps).half())
    lat, ctx = torch.cat(lat), torch.cat(ctx)
    z_std = lat.std().item()
    lat = lat / z_std  # unit variance: the sampler's latent = 0.18215 x the exported VAE's latent
    uncond = text_context(clip, tok, [""])[0]
    log(f"unet: {n} latents {tuple(lat.shape[1:])}, z std {z_std:.3f}, contexts in {time.time() - t0:.0f} s")
    # Data parallel: two processes (when there are two threads or more), each with half of every
    # batch and half of the threads, their gradients averaged through shared memory each step (the
    # same update as one process with the whole batch). A step of batch 48 on two cores: 0.56 s as
    # one two-thread process, 0.42 s as two one-thread ones (PyTorch's small matrices and
    # elementwise ops scale poorly over threads). Always two, so that the samples and the noise
    # each process draws, hence the model, do not depend on the number of cores.
    world = 2 if args.threads >= 2 else 1
    out = f"{args.work}/unet.pt"
    shared = [t.share_memory_() for t in (lat, ctx, uncond)]
    if world == 1:
        unet_worker(0, 1, args.threads, *shared, None, None, z_std, steps_of(args, "unet"), out)
        return
    mp = torch.multiprocessing.get_context("spawn")
    n_par = sum(p.numel() for p in nets.UNet(**UNET).parameters())
    buf = torch.zeros(2, world, n_par + 1).share_memory_()  # two, used in turn: one barrier a step
    bar = mp.Barrier(world)
    work = (*shared, buf, bar, z_std, steps_of(args, "unet"), out)
    procs = [mp.Process(target=unet_worker, args=(r, world, args.threads // world, *work)) for r in range(world)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        time.sleep(1)
        if any(p.exitcode not in (None, 0) for p in procs):  # one failed: the other would wait at the barrier
            for p in procs:
                p.terminate()
            break
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        sys.exit("train.py: a U-Net worker failed (its messages are above)")


def unet_worker(rank, world, threads, lat, ctx, uncond, buf, bar, z_std, total, out):
    """One of `world` data-parallel U-Net trainers (rank 0 keeps the EMA, logs and saves): the same
    initial weights everywhere, its own samples and noise, the gradients averaged in `buf`."""
    torch.set_num_threads(threads)
    torch.manual_seed(5)
    model = nets.UNet(**UNET)
    ema = nets.UNet(**UNET)
    ema.load_state_dict(model.state_dict())
    torch.manual_seed(5 + 1000 * (rank + 1))
    rng = np.random.default_rng((5, rank))
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    opt = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=0.0)
    ac = nets.scaled_linear_alphas_cumprod().float()
    # Min-SNR-5 loss weights (Hang et al. 2023), for epsilon-prediction min(SNR, 5) / SNR: the
    # nearly clean timesteps, whose fine detail the VAE blurs anyway, stop dominating the gradient,
    # and the noisy ones, where shape and position are decided, get its weight
    snr = ac / (1 - ac)
    min_snr = snr.clamp(max=5.0) / snr
    n, hist, B = len(lat), [], UNET_BATCH // world
    parent = os.getppid() if world > 1 else None  # the U-Net stage's process started this one
    t0 = time.time()
    for step in range(total):
        exit_if_orphaned(parent)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, UNET_LR, 100)
        idx = torch.from_numpy(rng.integers(0, n, B))
        x0, c = lat[idx], ctx[idx].float()
        drop = torch.from_numpy(rng.random(B) < 0.1)
        c[drop] = uncond
        t = torch.from_numpy(rng.integers(0, 1000, B))
        noise = torch.randn_like(x0)
        a = ac[t].view(B, 1, 1, 1)
        mse = (model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, c) - noise).square().mean((1, 2, 3))
        loss = (mse * min_snr[t]).mean()
        opt.zero_grad()
        loss.backward()
        mse_mean = mse.mean().item()
        if world > 1:
            row = buf[step % 2, rank]
            torch.cat([p.grad.reshape(-1) for p in params], out=row[:-1])
            row[-1] = mse_mean
            bar.wait(timeout=600)
            avg = buf[step % 2].sum(0) / world  # the same sum, in the same order, in every process
            for p, g in zip(params, avg[:-1].split(sizes)):
                p.grad.copy_(g.view_as(p))
            mse_mean = avg[-1].item()
        opt.step()
        if rank:
            continue
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), params):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        hist.append(mse_mean)  # unweighted: comparable with runs before the weighting
        if step % 50 == 0 or step == total - 1:
            log(f"unet {step}/{total} loss {np.mean(hist[-50:]):.4f} ({time.time() - t0:.0f} s)")
    if world > 1:  # the processes' weights must have stayed identical
        torch.cat([p.detach().reshape(-1) for p in params], out=buf[total % 2, rank, :-1])
        bar.wait(timeout=600)
        if rank == 0 and not all(torch.equal(buf[total % 2, 0, :-1], buf[total % 2, r, :-1]) for r in range(1, world)):
            sys.exit("train.py: the U-Net workers' weights differ")
    if rank == 0:
        save_state(ema, out, {"loss": hist, "seconds": time.time() - t0, "z_std": z_std, "processes": world})


# ------------------------------------------------------------------ evaluation (Python side, for the report)
def class_embeds(clip, tok):
    labels = [(c, s) for c in scenes.COLOURS for s in scenes.SHAPES]
    caps = [scenes.articles(f"a {c} {s}") for c, s in labels]
    with torch.no_grad():
        _, pooled = clip.text_model(torch.tensor([tok.encode(c) for c in caps]), tok.eot)
        return labels, F.normalize(clip.text_projection(pooled), dim=-1)


def classify(clip, labels, cls, imgs):
    with torch.no_grad():
        v = F.normalize(clip.visual_projection(clip.vision_model(nets.clip_pixels(imgs))), dim=-1)
    return [labels[i] for i in (v @ cls.T).argmax(1).tolist()]


def zero_shot(clip, tok, n, seed):
    """Zero-shot colour and shape accuracy on n fresh single-shape scenes (held-out pairs included),
    and on the held-out pairs alone (both right)."""
    labels, cls = class_embeds(clip, tok)
    imgs, _, lab = batch(np.random.default_rng(seed), n, train=False, pair_prob=0.0)
    pred = classify(clip, labels, cls, imgs)
    held = [(l["colour"], l["shape"]) in scenes.HELD_OUT for l in lab]
    return {"shape": float(np.mean([p[1] == l["shape"] for p, l in zip(pred, lab)])),
            "colour": float(np.mean([p[0] == l["colour"] for p, l in zip(pred, lab)])),
            "both_held_out_pairs": float(np.mean([p == (l["colour"], l["shape"]) for p, l, h in zip(pred, lab, held) if h]))}


@torch.no_grad()
def sample(unet, vae, ctx, uncond, z_std, seed, steps=20, cfg=5.0, latents=False):
    """k-diffusion Euler ancestral on the scaled-linear schedule (for the report, and the TAESD
    stage's latents: latents=True returns them, as the U-Net makes them, instead of images)."""
    g = torch.Generator().manual_seed(seed)
    ac = nets.scaled_linear_alphas_cumprod()
    sig_all = ((1 - ac) / ac).sqrt()
    ts = torch.linspace(999, 0, steps, dtype=torch.float64)
    log_s = sig_all.log()
    sig = [float(torch.exp(log_s[int(t.floor())] * (1 - (t - t.floor())) + log_s[int(t.ceil())] * (t - t.floor()))) for t in ts] + [0.0]
    B = ctx.shape[0]
    f = 2 ** (len(VAE["mult"]) - 1)  # the VAE's downsampling
    x = torch.randn(B, VAE["z"], scenes.SIZE // f, scenes.SIZE // f, generator=g, dtype=torch.float64) * sig[0]
    for i in range(steps):
        s = sig[i]
        xin = (x / math.sqrt(s * s + 1)).float()
        t = torch.full((2 * B,), float(ts[i]))
        e = unet(torch.cat([xin, xin]), t, torch.cat([uncond.expand(B, -1, -1), ctx])).double()
        e = e[:B] + cfg * (e[B:] - e[:B])
        s_up = min(sig[i + 1], math.sqrt(sig[i + 1] ** 2 * (s * s - sig[i + 1] ** 2) / (s * s)))
        s_down = math.sqrt(sig[i + 1] ** 2 - s_up ** 2)
        x = x + e * (s_down - s)
        if sig[i + 1] > 0:
            x = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * s_up
    if latents:
        return x.float()
    img = vae.decode((x * z_std).float())
    return ((img.clamp(-1, 1) + 1) * 127.5 + 0.5).floor().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def closed_loop_prompts():
    """40 prompts covering every shape and colour: colour i with shapes i and i+2 (mod 5), twice each."""
    names, out = list(scenes.COLOURS), []
    for i, c in enumerate(names):
        for k in range(4):
            s = scenes.SHAPES[(i + (k % 2) * 2 + k // 2) % 5]
            out.append((c, s, "large" if k % 2 == 0 else "small"))
    return out


# ------------------------------------------------------------------ export
def write_safetensors(path, tensors, metadata=None):
    header, off, blobs = {}, 0, []
    for k, t in tensors.items():
        t = t.detach().contiguous()
        dt = {torch.float16: "F16", torch.float32: "F32"}[t.dtype]
        b = t.numpy().tobytes()
        header[k] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def fold_latent_scale(v, k):
    """Scales a VAE state dict's latent by k in place: posterior mean x k (its logvar + 2 log k),
    decoder input / k; k and then 1/k give back the original."""
    z = VAE["z"]
    v["quant_conv.weight"][:z] *= k
    v["quant_conv.bias"][:z] *= k
    v["quant_conv.bias"][z:] += 2 * math.log(k)
    v["post_quant_conv.weight"] /= k


def read_safetensors(path):
    """-> ({name: float32 tensor}, metadata); F16 and F32 only, offsets checked."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        sys.exit(f"{path}: too short for a safetensors file")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        sys.exit(f"{path}: header length {n} runs past the end of the file")
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    out = {}
    for k, e in header.items():
        if k == "__metadata__":
            continue
        a, b = e["data_offsets"]
        dt = {"F16": np.float16, "F32": np.float32}.get(e["dtype"])
        if dt is None or not 0 <= a <= b <= len(body) or b - a != np.dtype(dt).itemsize * math.prod(e["shape"]):
            sys.exit(f"{path}: tensor {k}: bad dtype or offsets")
        out[k] = torch.from_numpy(np.frombuffer(body[a:b], dt).astype(np.float32).reshape(e["shape"]))
    return out, header.get("__metadata__", {})


def stage_import(args):
    """The tokenizer, CLIP and VAE of an exported model (--from: clip.safetensors, demo.safetensors,
    vocab.json, merges.txt, training_report.json) into --work as the clip, vae and tokenizer stages
    would leave them: CLIP with its patch embedding as the plain kernel (the export merges the
    separable form), the VAE with the latent scale unfolded; both were F16 in the export."""
    src = args.src
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(f"{src}/{f}", f"{args.work}/{f}")
    with open(f"{src}/training_report.json") as f:
        rep = json.load(f)
    tok = bpe.Tokenizer(args.work)
    vision = dict(CLIP_VISION, sep=0)
    clip = nets.Clip(len(tok.vocab), vision=vision)
    clip.load_state_dict(read_safetensors(f"{src}/clip.safetensors")[0])
    done = {"loss": [], "imported_from": src}
    for name in ("clip_phase1.pt", "clip.pt"):  # the U-Net reads the first, the export the second
        save_state(clip, f"{args.work}/{name}", dict(done, vision=vision, seconds=rep["seconds"]["clip"],
                                                      final_loss=rep["final_loss"]["clip"]))
    sd, _ = read_safetensors(f"{src}/demo.safetensors")
    v = {n[len("first_stage_model."):]: t for n, t in sd.items() if n.startswith("first_stage_model.")}
    fold_latent_scale(v, 1.0 / rep["latent_scale_folded"])  # undo stage_export's fold
    vae = nets.VAE(**VAE)
    vae.load_state_dict(v)
    save_state(vae, f"{args.work}/vae.pt", dict(done, seconds=rep["seconds"]["vae"], final_loss=rep["final_loss"]["vae"]))
    log(f"import: tokenizer, CLIP and VAE from {src}")


def stage_export(args):
    tok, clip, clip_st = load_clip(args)
    vae, vae_st = load_vae(args)
    u = torch.load(f"{args.work}/unet.pt")
    unet = nets.UNet(**UNET)
    unet.load_state_dict(u["model"])
    unet.eval()
    z_std = u["z_std"]
    os.makedirs(args.out, exist_ok=True)
    # fold the latent scale into the VAE: exported latent = z / z_std / 0.18215, so that
    # sampler latent (unit variance) = 0.18215 x exported latent, as the C pipeline assumes
    k = 1.0 / (z_std * SD_SCALE)
    v = {n: p.clone() for n, p in vae.state_dict().items()}
    fold_latent_scale(v, k)
    sd = {}
    sd.update({"model.diffusion_model." + n: p.half() for n, p in unet.state_dict().items()})
    sd.update({"first_stage_model." + n: p.half() for n, p in v.items()})
    cs = clip.hf_state_dict()
    sd.update({"cond_stage_model.transformer." + n: p.half() for n, p in cs.items() if n.startswith("text_model.")})
    meta = {"format": "pt", "modelspec.title": "vkdiffusion demo (tools/train)", "modelspec.architecture": "stable-diffusion-v1",
            "modelspec.resolution": "64x64", "unet": json.dumps(UNET), "vae": json.dumps(VAE)}
    write_safetensors(f"{args.out}/demo.safetensors", sd, meta)
    cs = {n: (p.float() if n == "logit_scale" else p.half()) for n, p in cs.items()}
    write_safetensors(f"{args.out}/clip.safetensors", cs, {"format": "pt", "model": "vkdiffusion demo CLIP (tools/train)"})
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(f"{args.work}/{f}", f"{args.out}/{f}")

    # report: CLIP zero-shot on fresh single-shape scenes, closed loop through the Python sampler
    zs = zero_shot(clip, tok, 500, seed=7)
    labels, cls = class_embeds(clip, tok)
    prompts = closed_loop_prompts()
    caps = [scenes.articles(f"a {s} {c} {sh}") for c, sh, s in prompts]
    ctx = text_context(clip, tok, caps)
    uncond = text_context(clip, tok, [""])
    gen = sample(unet, vae, ctx, uncond, z_std, seed=11)
    gp = classify(clip, labels, cls, gen)
    ok = [p == (c, s) for p, (c, s, _) in zip(gp, prompts)]
    cl = {"both": float(np.mean(ok)), "shape": float(np.mean([p[1] == s for p, (c, s, _) in zip(gp, prompts)])),
          "colour": float(np.mean([p[0] == c for p, (c, s, _) in zip(gp, prompts)]))}
    sheet = np.full((5 * 66, 8 * 66, 3), 255, np.uint8)
    for i, im in enumerate(gen):
        sheet[(i // 8) * 66 + 1:(i // 8) * 66 + 65, (i % 8) * 66 + 1:(i % 8) * 66 + 65] = im
    with open(f"{args.work}/python_closed_loop.png", "wb") as f:
        f.write(png_bytes(sheet))
    panels = []
    report = {"steps": STEPS, "scale": args.scale, "clip_vision": clip_st.get("vision", CLIP_VISION),  # sep 0: imported, plain kernel
              "unet": UNET, "vae": VAE, "z_std": z_std, "latent_scale_folded": k, "held_out_pairs": scenes.HELD_OUT,
              "zero_shot_python_500": zs, "closed_loop_python_40": cl, "seconds": {}, "final_loss": {}}
    for name, st, title, colour, phase2 in (("clip", clip_st, "CLIP: contrastive loss", (200, 30, 30), "clip_blur"),
                                            ("vae", vae_st, "VAE: L1 reconstruction error", (30, 90, 200), "vae_shapes"),
                                            ("unet", u, "U-Net: epsilon MSE", (30, 150, 60), None)):
        if not st["loss"]:  # a stage's file read back from a checkpoint has no loss history, only its final loss
            final = st["final_loss"]
        else:
            final = float(np.mean(st["loss"][-50:]))
            n1 = steps_of(args, name)  # where the second phase starts, if the history is both phases of this --scale
            marks = [(n1, phase2)] if phase2 and len(st["loss"]) == n1 + steps_of(args, phase2) else []
            panels.append((f"{title}; last 50 steps {final:.3g}", st["loss"], colour, marks))
        report["seconds"][name] = round(st["seconds"], 1)
        report["final_loss"][name] = final
        if st.get("imported_from"):
            report.setdefault("imported_from", {})[name] = st["imported_from"]
    plot(panels, f"{args.out}/training_loss.png")
    with open(f"{args.out}/training_report.json", "w") as f:
        json.dump(report, f, indent=1)
    log("export:", json.dumps(report))


def z_std_of(args):
    """The latent scale the U-Net was trained with: unet.pt's, else (after --stage import) the report's."""
    if os.path.exists(f"{args.work}/unet.pt"):
        return float(torch.load(f"{args.work}/unet.pt")["z_std"])
    with open(f"{args.src}/training_report.json") as f:
        return float(json.load(f)["z_std"])


def load_unet_for_taesd(args):
    """The U-Net: unet.pt's, else (after --stage import) the exported model's (F16 there)."""
    unet = nets.UNet(**UNET)
    if os.path.exists(f"{args.work}/unet.pt"):
        unet.load_state_dict(torch.load(f"{args.work}/unet.pt")["model"])
    else:
        sd, _ = read_safetensors(f"{args.src}/demo.safetensors")
        pre = "model.diffusion_model."
        unet.load_state_dict({n[len(pre):]: t for n, t in sd.items() if n.startswith(pre)})
    return unet.eval()


def taesd_pool(args, vae, z_std, n):
    """n latents as the sampler ends with them (20 Euler a steps, cfg 5, training captions): the
    distribution previews and fast decodes see, which VAE means of drawn scenes only approximate
    (the generated latents reach further into the tails)."""
    tok, clip, _ = load_clip(args)
    unet = load_unet_for_taesd(args)
    rng = np.random.default_rng(23)
    uncond = text_context(clip, tok, [""])
    out, t0 = [], time.time()
    for k in range(0, n, 32):
        caps = batch(rng, 32)[1]
        out.append(sample(unet, vae, text_context(clip, tok, caps), uncond, z_std, seed=1000 + k, latents=True))
        log(f"taesd: sampled {k + 32}/{n} latents ({time.time() - t0:.0f} s)")
    return torch.cat(out)[:n]


def stage_taesd(args):
    """A TAESD-layout decoder distilled from the VAE's: inputs are latents as the U-Net makes them,
    8 of each batch of 16 the VAE means of drawn scenes (z / z_std) and 8 from a pool of 512
    latents sampled with the U-Net; a quarter get Gaussian noise of std up to 0.5 (as mid-sampling
    latents are); the target is the KL decoder's image of that same latent in [0, 1]. L1 + MSE per
    pixel + 3 x the L1 of each image's mean colour, AdamW 1e-3. Written to --out as taesd.safetensors (diffusers'
    AutoencoderTiny names, F16); the demo model's previews (--preview-every) use it, test_demo
    checks it against the KL decoder."""
    vae, _ = load_vae(args)
    z_std = z_std_of(args)
    torch.manual_seed(17)
    pool = taesd_pool(args, vae, z_std, 512)
    rng = np.random.default_rng(17)
    dec = nets.TinyDecoder(z=VAE["z"], **TAESD)
    opt = torch.optim.AdamW(dec.parameters(), lr=1e-3, weight_decay=0.0)
    total, hist, t0 = steps_of(args, "taesd"), [], time.time()
    for step in range(total):
        exit_if_orphaned(MAIN_PID)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, 1e-3, 50)
        x = torch.as_tensor(batch(rng, 8)[0]).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            z = torch.cat([vae.encode(x)[0] / z_std, pool[torch.as_tensor(rng.integers(0, len(pool), 8))]])
            sig = torch.rand(z.shape[0], 1, 1, 1) * 0.5 * (torch.rand(z.shape[0], 1, 1, 1) < 0.25).float()
            z = z + sig * torch.randn_like(z)
            target = (vae.decode(z * z_std).clamp(-1, 1) + 1) / 2
        err = dec(z) - target
        # per pixel, and each image's mean colour (what a preview must get right) weighted 3x
        loss = err.abs().mean() + err.pow(2).mean() + 3 * err.mean((2, 3)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(err.abs().mean().item())
        if step % 50 == 0 or step == total - 1:
            log(f"taesd {step}/{total} l1 {hist[-1]:.4f} ({time.time() - t0:.0f} s)")
    os.makedirs(args.out, exist_ok=True)
    sd = {"decoder." + n: p.detach().half() for n, p in dec.state_dict().items()}
    meta = {"format": "pt", "model": "vkdiffusion demo TAESD decoder (tools/train --stage taesd)", "taesd": json.dumps(TAESD),
            "l1_last_50": f"{float(np.mean(hist[-50:])):.4f}", "seconds": f"{time.time() - t0:.0f}"}
    write_safetensors(f"{args.out}/taesd.safetensors", sd, meta)
    log(f"taesd: {args.out}/taesd.safetensors, L1 of the last 50 steps {np.mean(hist[-50:]):.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "demo"))
    ap.add_argument("--work", default="/tmp/vkd-demo-train")
    ap.add_argument("--stage", default="all", help="all, or a comma-separated list of: " + ", ".join(STAGES + EXTRA_STAGES))
    ap.add_argument("--from", dest="src", help="--stage import: the exported model to read (default: --out)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every step count (0.01: a smoke test)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    wanted = STAGES if args.stage == "all" else args.stage.split(",")
    if any(n not in STAGES + EXTRA_STAGES for n in wanted):
        ap.error(f"--stage {args.stage}: unknown stage (one of: all, {', '.join(STAGES + EXTRA_STAGES)})")
    args.src = args.src or args.out
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    t_all = time.time()
    if args.stage == "all" and args.threads >= 2:
        run_stages(args, ["tokenizer"])
        # Processes side by side, half the threads each, do more work than one after another
        # (PyTorch's small matrices and elementwise ops scale poorly over threads): CLIP phase 1
        # beside the VAE; then clip_blur, which needs phase 1, beside the rest of the VAE and then
        # beside the U-Net, which needs the VAE and only phase 1's text tower. Each process has a
        # fixed thread count, so the results do not depend on how they share the cores.
        common = ["--work", args.work, "--out", args.out, "--scale", str(args.scale), "--threads", str(args.threads // 2)]

        def spawn(*chain):
            return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--stage", ",".join(chain)] + common,
                                    env=dict(os.environ, VKD_TRAIN_PARENT=str(os.getpid())))

        vae = spawn("vae", "vae_shapes")
        blur = spawn("clip_blur") if spawn("clip").wait() == 0 else None
        if vae.wait() or blur is None:
            if blur is not None:
                blur.wait()  # its clip.pt is still of use to --stage
            sys.exit("train.py: a parallel stage failed (its messages are above)")
        try:
            run_stages(args, ["unet"])
        except BaseException:
            blur.terminate()
            blur.wait()
            raise
        if blur.wait():
            sys.exit("train.py: stage clip_blur failed (its messages are above)")
        wanted = ["export", "taesd"]
    run_stages(args, wanted)
    if args.stage == "all":
        log(f"all stages done in {time.time() - t_all:.0f} s")


def run_stages(args, names):
    for name in names:
        t0 = time.time()
        globals()["stage_" + name](args)
        log(f"stage {name} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
