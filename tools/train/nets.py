"""The demo model's networks, with the checkpoint key names the C loaders read.

CLIP towers use HF CLIPModel names (text_model.*, vision_model.*, text_projection,
visual_projection, logit_scale); the VAE and U-Net use the CompVis ldm names of an SD 1.x
single-file checkpoint (first_stage_model.*, model.diffusion_model.*).  Norm epsilons as ldm:
ResBlock and U-Net "out" GroupNorm 1e-5, SpatialTransformer and VAE GroupNorm 1e-6, LayerNorm 1e-5.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def attention(q, k, v, heads, causal=False):
    """q [B, Tq, D], k/v [B, Tk, D] -> [B, Tq, D], softmax(q k^T / sqrt(D/heads)) v per head."""
    B, Tq, D = q.shape
    Tk = k.shape[1]
    q = q.view(B, Tq, heads, D // heads).transpose(1, 2)
    k = k.view(B, Tk, heads, D // heads).transpose(1, 2)
    v = v.view(B, Tk, heads, D // heads).transpose(1, 2)
    a = (q @ k.transpose(-1, -2)) * (D // heads) ** -0.5
    if causal:
        a = a.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (a.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, D)


# ---------------------------------------------------------------- CLIP (HF CLIPModel names)
class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, causal):
        return self.out_proj(attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal))


class ClipLayer(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = ClipAttention(d, heads)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)

    def forward(self, x, causal):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp.fc2(quick_gelu(self.mlp.fc1(self.layer_norm2(x))))


class ClipText(nn.Module):
    def __init__(self, vocab, ctx=77, d=128, layers=3, heads=2, mlp=512):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.token_embedding = nn.Embedding(vocab, d)
        self.embeddings.position_embedding = nn.Embedding(ctx, d)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ClipLayer(d, heads, mlp) for _ in range(layers))
        self.final_layer_norm = nn.LayerNorm(d)
        nn.init.normal_(self.embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.01)

    def forward(self, ids, eot):
        """ids [B, T] -> (last hidden state after the final LayerNorm [B, T, D], pooled at the first EOT [B, D])."""
        T = ids.shape[1]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding.weight[:T]
        for layer in self.encoder.layers:
            x = layer(x, True)
        x = self.final_layer_norm(x)
        first_eot = (ids == eot).int().argmax(1)
        return x, x[torch.arange(ids.shape[0]), first_eot]


class PatchEmbedding(nn.Module):
    """CLIP's patch embedding (a bias-free convolution, patch x patch, stride patch) with its first
    `sep` filters trained in separable form: a spatial filter times one of 3 learned colour
    directions (filter i uses direction i % 3). A shape reaches a linear patch embedding
    multiplied by its colour difference from the background; sharing spatial filters across
    colour directions lets the tower learn edges once for every colour pair. `weight` is the
    plain [d, 3, patch, patch] kernel, which is what is exported."""

    def __init__(self, d, patch, sep):
        super().__init__()
        self.patch, self.sep = patch, sep
        self.spatial = nn.Parameter(torch.randn(sep, 1, patch, patch) / patch)
        self.colour = nn.Parameter(torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.5, 0.5, -1.0]]) / 3 ** 0.5)
        free = nn.Conv2d(3, d - sep, patch, patch, bias=False)
        self.free = nn.Parameter(free.weight.detach().clone())

    @property
    def weight(self):
        cols = self.colour[torch.arange(self.sep) % 3]  # [sep, 3]
        return torch.cat([self.spatial * cols[:, :, None, None], self.free])

    def forward(self, x):
        return F.conv2d(x, self.weight, stride=self.patch)


class ClipVision(nn.Module):
    def __init__(self, image=64, patch=8, d=128, layers=3, heads=2, mlp=512, sep=0):
        super().__init__()
        self.patch = patch
        self.embeddings = nn.Module()
        self.embeddings.class_embedding = nn.Parameter(torch.randn(d) * 0.02)
        self.embeddings.patch_embedding = PatchEmbedding(d, patch, sep) if sep else nn.Conv2d(3, d, patch, patch, bias=False)
        self.embeddings.position_embedding = nn.Embedding((image // patch) ** 2 + 1, d)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.02)
        self.pre_layrnorm = nn.LayerNorm(d)  # sic: HF's spelling
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ClipLayer(d, heads, mlp) for _ in range(layers))
        self.post_layernorm = nn.LayerNorm(d)

    def forward(self, pixels):
        x = self.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.embeddings.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.embeddings.position_embedding.weight
        x = self.pre_layrnorm(x)
        for layer in self.encoder.layers:
            x = layer(x, False)
        return self.post_layernorm(x[:, 0])


class Clip(nn.Module):
    """Text tower width d; vision tower: a dict of ClipVision's settings (width, layers, heads, mlp, sep)."""

    def __init__(self, vocab, d=128, proj=64, vision=None):
        super().__init__()
        vision = {"d": d, **(vision or {})}
        self.text_model = ClipText(vocab, d=d)
        self.vision_model = ClipVision(**vision)
        self.text_projection = nn.Linear(d, proj, bias=False)
        self.visual_projection = nn.Linear(vision["d"], proj, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def hf_state_dict(self):
        """The state dict in HF CLIPModel names (a separable patch embedding as its plain kernel)."""
        sd = self.state_dict()
        pe = self.vision_model.embeddings.patch_embedding
        if isinstance(pe, PatchEmbedding):
            key = "vision_model.embeddings.patch_embedding."
            sd = {k: v for k, v in sd.items() if not k.startswith(key)}
            sd[key + "weight"] = pe.weight.detach()
        return sd


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def clip_pixels(u8):
    """uint8 [B, H, W, 3] -> CLIP-normalised float [B, 3, H, W] (what classify's preprocessing gives at 64x64)."""
    x = torch.as_tensor(u8).permute(0, 3, 1, 2).float() / 255.0
    return (x - CLIP_MEAN) / CLIP_STD


# ---------------------------------------------------------------- VAE (ldm AutoencoderKL names)
def vnorm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class VRes(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = vnorm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = vnorm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class VAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = vnorm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))
        return x + self.proj_out(attention(q, k, v, 1).transpose(1, 2).view(B, C, H, W))


def vmid(c):
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = VRes(c, c), VAttn(c), VRes(c, c)
    return m


class Encoder(nn.Module):
    def __init__(self, ch, mult, blocks, z):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(blocks):
                lvl.block.append(VRes(cin, ch * m))
                cin = ch * m
            if i != len(mult) - 1:
                lvl.downsample = nn.Module()
                lvl.downsample.conv = nn.Conv2d(cin, cin, 3, 2, 0)
            self.down.append(lvl)
        self.mid = vmid(cin)
        self.norm_out, self.conv_out = vnorm(cin), nn.Conv2d(cin, 2 * z, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch, mult, blocks, z):
        super().__init__()
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(z, cin, 3, 1, 1)
        self.mid = vmid(cin)
        self.up = nn.ModuleList([None] * len(mult))
        for i in reversed(range(len(mult))):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(blocks + 1):
                lvl.block.append(VRes(cin, ch * mult[i]))
                cin = ch * mult[i]
            if i != 0:
                lvl.upsample = nn.Module()
                lvl.upsample.conv = nn.Conv2d(cin, cin, 3, 1, 1)
            self.up[i] = lvl
        self.norm_out, self.conv_out = vnorm(cin), nn.Conv2d(cin, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for lvl in reversed(self.up):
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAE(nn.Module):
    def __init__(self, ch=32, mult=(1, 2, 2, 2), blocks=1, z=4):
        super().__init__()
        self.encoder, self.decoder = Encoder(ch, mult, blocks, z), Decoder(ch, mult, blocks, z)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(2 * z, 2 * z, 1), nn.Conv2d(z, z, 1)

    def encode(self, x):
        """image in [-1, 1] -> (mean, logvar) of the posterior"""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, 1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------- U-Net (ldm UNetModel names)
def timestep_embedding(t, dim, max_period=10000.0):
    """ldm's sinusoidal embedding, cos first (flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb, cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, cout), nn.SiLU(), nn.Identity(), nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip_connection = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, d, ctx, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k, self.to_v = nn.Linear(ctx, d, bias=False), nn.Linear(ctx, d, bias=False)
        self.to_out = nn.Sequential(nn.Linear(d, d))

    def forward(self, x, ctx=None):
        c = x if ctx is None else ctx
        return self.to_out(attention(self.to_q(x), self.to_k(c), self.to_v(c), self.heads))


class GEGLU(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.proj = nn.Linear(d, 2 * inner)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, -1)
        return a * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, d, ctx, heads):
        super().__init__()
        self.attn1, self.attn2 = CrossAttention(d, d, heads), CrossAttention(d, ctx, heads)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(d, 4 * d), nn.Identity(), nn.Linear(4 * d, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff.net(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, c, ctx, heads):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.proj_in, self.proj_out = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(c, ctx, heads)])

    def forward(self, x, ctx):
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for b in self.transformer_blocks:
            h = b(h, ctx)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, 2, 1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, emb, ctx):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, SpatialTransformer):
                x = m(x, ctx)
            else:
                x = m(x)
        return x


class UNet(nn.Module):
    def __init__(self, mc=64, mult=(1, 2, 2), blocks=2, attn_levels=(0, 1), ctx=128, heads=8, zc=4):
        super().__init__()
        self.mc = mc
        temb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(zc, mc, 3, 1, 1)])])
        chans, ch = [mc], mc
        for lvl, m in enumerate(mult):
            for _ in range(blocks):
                layers = [ResBlock(ch, mc * m, temb)]
                ch = mc * m
                if lvl in attn_levels:
                    layers.append(SpatialTransformer(ch, ctx, heads))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if lvl != len(mult) - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
        self.middle_block = Seq([ResBlock(ch, ch, temb), SpatialTransformer(ch, ctx, heads), ResBlock(ch, ch, temb)])
        self.output_blocks = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(mult))):
            for i in range(blocks + 1):
                layers = [ResBlock(ch + chans.pop(), mc * m, temb)]
                ch = mc * m
                if lvl in attn_levels:
                    layers.append(SpatialTransformer(ch, ctx, heads))
                if lvl and i == blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, zc, 3, 1, 1))

    def forward(self, x, t, ctx):
        emb = self.time_embed(timestep_embedding(t, self.mc))
        hs, h = [], x
        for b in self.input_blocks:
            h = b(h, emb, ctx)
            hs.append(h)
        h = self.middle_block(h, emb, ctx)
        for b in self.output_blocks:
            h = b(torch.cat([h, hs.pop()], 1), emb, ctx)
        return self.out(h)


def scaled_linear_alphas_cumprod(n=1000, start=0.00085, end=0.012):
    betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


# ---------------------------------------------------------------- TAESD's decoder (madebyollin), any width and scale
class TinyBlock(nn.Module):
    """madebyollin's Block (diffusers' AutoencoderTinyBlock): ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return F.relu(self.conv(x) + x)


class TinyDecoder(nn.Module):
    """TAESD's decoder with `stages` 2x upsamplings (3: TAESD's 8x) and `width` channels (TAESD: 64):
    tanh(z / 3) 3, conv, ReLU, stages x [3 Blocks, nearest 2x, conv without bias], Block, conv -> RGB
    in [0, 1]. Its state_dict under "decoder." is diffusers' AutoencoderTiny layout."""

    def __init__(self, z=4, width=64, stages=3):
        super().__init__()
        layers = [nn.Conv2d(z, width, 3, padding=1), nn.ReLU()]
        for _ in range(stages):
            layers += [TinyBlock(width) for _ in range(3)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1, bias=False)]
        layers += [TinyBlock(width), nn.Conv2d(width, 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z):
        return self.layers(torch.tanh(z / 3) * 3)
