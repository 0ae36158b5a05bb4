"""A naive SPM-PVT written straight from the reference model (docs/reference_model.md),
in the authors' key layout.

This is the oracle of the tests and the "naive SPM" of the benchmark: per-head
convolution loop with concatenation, an explicit channel shuffle, full 5-token
attention in every 2x2 window of which only the guide row is kept, and the
PVT v1 classification model around it. It accepts even sizes only, as the
reference does.
"""
import torch
import torch.nn.functional as F
from torch import nn

ARCHS = {
    'tiny': (2, 2, 2, 2),
    'small': (3, 4, 6, 3),
    'medium': (3, 4, 18, 3),
    'large': (3, 8, 27, 3),
}
DIMS, HEADS, MLP_RATIOS, SR_RATIOS = (64, 128, 320, 512), (1, 2, 5, 8), (8, 8, 4, 4), (8, 4, 2, 1)


class RefMSA(nn.Module):

    def __init__(self, in_dim, out_dim):
        super().__init__()
        c = in_dim // 4
        self.head_channels = c
        for k in (3, 5, 7, 9):
            setattr(self, f'local_conv_{k}', nn.Conv2d(c, c, k, 1, k // 2, groups=c))
        self.proj = nn.Sequential(
            nn.Conv2d(in_dim, 2 * in_dim, 1, groups=c), nn.BatchNorm2d(2 * in_dim),
            nn.GELU(), nn.Conv2d(2 * in_dim, out_dim, 1))

    def forward(self, x):
        heads = torch.split(x, self.head_channels, dim=1)
        outs = [getattr(self, f'local_conv_{k}')(h) for k, h in zip((3, 5, 7, 9), heads)]
        # Channel shuffle: output channel d*4 + i is channel d of head i.
        shuffled = torch.stack(outs, dim=2).flatten(1, 2)
        return self.proj(shuffled)


class RefAttention(nn.Module):

    def __init__(self, dim, num_heads=8):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        M, N, C = x.shape
        qkv = self.qkv(x).reshape(M, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(M, N, C)


class RefGLE(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.gtg = nn.Sequential(nn.BatchNorm2d(dim), nn.GELU(),
                                 nn.Conv2d(dim, dim, 7, 2, 3, groups=dim))
        self.norm0 = nn.LayerNorm(dim)
        self.attn = RefAttention(dim, 8)
        self.norm1 = nn.LayerNorm(dim)

    def forward(self, x):
        B, C, H, W = x.shape
        guide = self.gtg(x).permute(0, 2, 3, 1).reshape(-1, 1, C)
        windows = []
        for r in (0, 1):          # row-major inside the window
            for c in (0, 1):
                windows.append(x[:, :, r::2, c::2].permute(0, 2, 3, 1).reshape(-1, 1, C))
        tokens = self.norm0(torch.cat([guide] + windows, dim=1))   # (M, 5, C)
        out = self.attn(tokens)[:, 0]
        return self.norm1(out).reshape(B, H // 2, W // 2, C).permute(0, 3, 1, 2)


class RefSPM(nn.Module):

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.msa = RefMSA(in_dim, out_dim)
        self.gle = RefGLE(out_dim)

    def forward(self, x):
        return self.gle(self.msa(x))


class RefSPMPatchEmbed(nn.Module):
    """The reference wraps SPM as ``patch_embed{i}.spm``; tokens out."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.spm = RefSPM(in_dim, out_dim)

    def forward(self, x):
        x = self.spm(x)
        H, W = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (H, W)


class RefPatchEmbed(nn.Module):

    def __init__(self, in_chans=3, dim=64):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


class RefSRA(nn.Module):

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x_ = self.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1)
            x = self.norm(x_)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads,
                                C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefSRA(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, dim * mlp_ratio)

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


class RefSPMPVT(nn.Module):
    """Reference classification model (eval semantics: no dropout/drop path)."""

    def __init__(self, arch='tiny', num_classes=1000):
        super().__init__()
        depths = ARCHS[arch]
        grids = (56, 28, 14, 7)
        prev = 3
        for i in range(4):
            dim = DIMS[i]
            embed = RefPatchEmbed(3, dim) if i == 0 else RefSPMPatchEmbed(prev, dim)
            setattr(self, f'patch_embed{i + 1}', embed)
            n = grids[i]**2 + (1 if i == 3 else 0)
            setattr(self, f'pos_embed{i + 1}', nn.Parameter(torch.randn(1, n, dim) * .02))
            setattr(self, f'block{i + 1}', nn.ModuleList(
                RefBlock(dim, HEADS[i], MLP_RATIOS[i], SR_RATIOS[i]) for _ in range(depths[i])))
            prev = dim
        self.norm = nn.LayerNorm(512, eps=1e-6)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 512) * .02)
        self.head = nn.Linear(512, num_classes)

    @staticmethod
    def _pos(pos_embed, grid, H, W):
        if H * W == grid * grid:
            return pos_embed
        p = pos_embed.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        return F.interpolate(p, size=(H, W), mode='bilinear').reshape(1, -1, H * W).permute(0, 2, 1)

    def forward_features(self, x):
        """(stage 1-3 maps, normed cls token): the dense maps are what an
        ImageNet-initialised dense backbone must reproduce."""
        B = x.shape[0]
        maps = []
        grids = (56, 28, 14, 7)
        for i in range(4):
            x, (H, W) = getattr(self, f'patch_embed{i + 1}')(x)
            pos = getattr(self, f'pos_embed{i + 1}')
            if i == 3:
                x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
                pos = torch.cat([pos[:, :1], self._pos(pos[:, 1:], grids[i], H, W)], 1)
            else:
                pos = self._pos(pos, grids[i], H, W)
            x = x + pos
            for blk in getattr(self, f'block{i + 1}'):
                x = blk(x, H, W)
            if i < 3:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2)
                maps.append(x)
        return maps, self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x)[1])


def use_naive_spm(model: nn.Module) -> None:
    """Swap the SPM layers of an mmspm ``SPMPVT`` for naive ones with the same
    weights (renamed by the checkpoint conversion's own rules). Only the
    reference SPM has a naive twin: ablation variants (``gle``, ``guide``,
    ``guide_kernel_size``) are refused; merges that are not SPM stay."""
    from mmspm.models.spm import GuidedLocalEnhancement, StepwisePatchMerging
    from mmspm.models.spm_pvt_checkpoints import rename_reference_key
    own = model.state_dict()
    for i in (1, 2, 3):
        fast = model.patch_embeds[i]
        if not isinstance(fast, StepwisePatchMerging):
            continue
        gle = fast.gle
        if not isinstance(gle, GuidedLocalEnhancement) or gle.guide != 'gtg' or \
                gle.gtg[2].kernel_size != (7, 7):
            raise ValueError(f'use_naive_spm: merge {i} is an SPM ablation variant; the '
                             f'naive SPM is the reference only.')
        naive = RefSPM(fast.in_channels, fast.out_channels)
        naive.load_state_dict({
            k: own[rename_reference_key(f'patch_embed{i + 1}.spm.{k}')]
            for k in naive.state_dict()
        })
        model.patch_embeds[i] = naive
