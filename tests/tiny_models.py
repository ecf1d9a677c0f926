"""Tiny, randomly initialised Stable Diffusion 1.5 / SDXL / FLUX.1 pipelines built locally for tests.

The engine must be exercised on real diffusers pipelines without any model hub, so the tests build
pipelines of a few megabytes themselves (component configs follow diffusers' own tests) and can
also write them as one original-format (LDM / A1111 / ComfyUI) ``.safetensors`` checkpoint, the other
way users hand us models.

The diffusers -> original key mapping below is written against diffusers' forward converters in
``diffusers/loaders/single_file_utils.py`` (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``); the round trip is checked in the tests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    BlipTextConfig,
    BlipVisionConfig,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

__all__ = [
    "SDXL_TEXT_ENCODER_2_HIDDEN_SIZE",
    "SDXL_TEXT_ENCODER_2_LAYERS",
    "diffusers_to_original",
    "export_denoiser_file",
    "export_single_file",
    "tiny_blip",
    "tiny_flux",
    "tiny_flux_fill",
    "tiny_ip_adapter",
    "tiny_sd15",
    "tiny_sdxl",
    "write_clip_tokenizer",
    "write_t5_tokenizer",
]

# transformers' CLIP tokenizer test vocabulary: a handful of BPE pieces, enough to tokenize "lower newer".
_VOCAB = [
    "l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
    "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>",
]  # fmt: skip
_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>"]

# SDXL's second (OpenCLIP) text encoder must be WIDER than the first: `from_single_file` tells the two encoders
# apart only by comparing the checkpoint's position-embedding width with the model's (768 vs 1280 in real SDXL,
# see `create_diffusers_clip_model_from_ldm`). With both at 32, text_encoder_2 would silently receive
# text_encoder's CLIP-L weights and keep a random text_projection. 48 keeps 4 heads (head dim 12).
SDXL_TEXT_ENCODER_2_HIDDEN_SIZE = 48
# diffusers recognises an SDXL checkpoint by `conditioner.embedders.1.model.transformer.resblocks.9.*`
# (`infer_diffusers_model_type`), so the OpenCLIP encoder needs at least 10 layers to be detected as SDXL
# rather than as SD 1.x; loaders that classify checkpoints that way must see the tiny model as real SDXL.
SDXL_TEXT_ENCODER_2_LAYERS = 10

# A T5-style SentencePiece-Unigram vocabulary: T5's special ids first (<pad>=0, </s>=1, <unk>=2), then "▁" (the
# word-start marker), whole words of the test prompt and single letters, so any lowercase text tokenizes without <unk>.
_T5_PIECES = [
    "<pad>", "</s>", "<unk>", "▁", "▁lower", "▁newer", "▁low", "er", "▁a",
    *"abcdefghijklmnopqrstuvwxyz",
]  # fmt: skip
# FLUX.1's T5 encoder is as wide as the transformer's joint attention; the embedding leaves room past the vocabulary.
_FLUX_JOINT_ATTENTION_DIM = 32
_T5_VOCAB_SIZE = 64


def write_clip_tokenizer(directory: Path) -> CLIPTokenizer:
    """Write vocab.json + merges.txt into `directory` and load them, since no hub tokenizer may be fetched."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(_VOCAB)}))
    (directory / "merges.txt").write_text("\n".join(_MERGES) + "\n")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77, unk_token="<unk>", local_files_only=True)


def write_t5_tokenizer(directory: Path) -> T5TokenizerFast:
    """Build a T5 (Unigram) tokenizer from `_T5_PIECES`, save it to `directory` and load it back from there.

    The hub's tiny T5 tokenizers cannot be fetched, so the `tokenizers` backend is assembled here the way T5's is:
    Metaspace pre-tokenization, and `</s>` appended after every sequence. Only `tokenizer.json` (+ config) is written,
    no `spiece.model`; `T5TokenizerFast.from_pretrained` reloads it from that alone.
    """
    # Longer pieces score higher, so Unigram prefers "▁lower" over "▁low" + "er" over single letters.
    vocab = [(piece, 0.0 if i < 3 else len(piece) - 10.0) for i, piece in enumerate(_T5_PIECES)]
    backend = Tokenizer(Unigram(vocab, unk_id=_T5_PIECES.index("<unk>")))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    eos = ("</s>", _T5_PIECES.index("</s>"))
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return T5TokenizerFast.from_pretrained(directory, local_files_only=True)


def _clip_config(*, hidden_size: int = 32, num_hidden_layers: int = 5, **extra: object) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=num_hidden_layers,
        pad_token_id=1,
        vocab_size=1000,
        **extra,
    )


def _vae(**extra: object) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        **extra,
    )


def _unet_base(inpaint: bool) -> dict[str, Any]:
    """The UNet settings the tiny SD 1.5 and SDXL models share (diffusers' test components)."""
    return {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "sample_size": 32,
        "in_channels": 9 if inpaint else 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    }


def tiny_sd15(directory: Path, *, inpaint: bool = False) -> Path:
    """Save a tiny SD 1.5 pipeline (9-channel inpainting UNet if `inpaint`) to `directory`; vae_scale_factor is 2."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **_unet_base(inpaint),
        cross_attention_dim=32,
    )
    vae = _vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config())
    tokenizer = write_clip_tokenizer(directory / "tokenizer")
    pipeline_class = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = pipeline_class(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        # steps_offset=1 is what the pipeline would patch in anyway (with a FutureWarning) on every load.
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def tiny_lora(model: Path, target: Path, *, rank: int = 4) -> Path:
    """Save a LoRA for the UNet of the tiny SD 1.5 or SDXL model in `model` as `target` (one
    .safetensors file in diffusers' LoRA format, as LCM-LoRA ships), with random non-zero weights so
    that it visibly changes the pictures."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    torch.manual_seed(1)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    pipe.unet.add_adapter(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        target.parent, unet_lora_layers=get_peft_model_state_dict(pipe.unet), weight_name=target.name
    )
    return target


def tiny_sdxl(directory: Path, *, inpaint: bool = False) -> Path:
    """Save a tiny SDXL pipeline (9-channel inpainting UNet if `inpaint`) to `directory`; vae_scale_factor is 2.

    Differs from diffusers' SDXL test components so that single-file loading works like real SDXL:
    text_encoder_2 is `SDXL_TEXT_ENCODER_2_HIDDEN_SIZE` wide with `SDXL_TEXT_ENCODER_2_LAYERS` layers (see there),
    so cross_attention_dim is 32 + 48 = 80; the add-embedding input is 6 time ids * 8 + 32 pooled = 80.
    """
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        **_unet_base(inpaint),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=32 + SDXL_TEXT_ENCODER_2_HIDDEN_SIZE,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = _vae(sample_size=128)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_config(
            hidden_size=SDXL_TEXT_ENCODER_2_HIDDEN_SIZE,
            num_hidden_layers=SDXL_TEXT_ENCODER_2_LAYERS,
            hidden_act="gelu",
            projection_dim=32,
        )
    )
    tokenizer = write_clip_tokenizer(directory / "tokenizer")
    pipeline_class = StableDiffusionXLInpaintPipeline if inpaint else StableDiffusionXLPipeline
    pipe = pipeline_class(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def _save_flux(directory: Path, *, fill: bool, guidance_embeds: bool) -> Path:
    """Build and save a tiny FLUX.1 pipeline; the channel arithmetic is explained in `tiny_flux_fill`."""
    latent_channels = 2  # one VAE for both, as FLUX.1-Fill uses FLUX.1's (journeyd shares it between them)
    packed = 4 * latent_channels  # 2x2 patches of latents packed into one token
    vae_scale_factor = 1  # one VAE block: no down-sampling
    mask_channels = 4 * vae_scale_factor**2  # the pixel mask folded to latent size, then packed like the latents
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=packed * 2 + mask_channels if fill else packed,
        out_channels=packed,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_FLUX_JOINT_ATTENTION_DIM,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=[4, 4, 8],  # sums to attention_head_dim
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    assert 2 ** (len(vae.config.block_out_channels) - 1) == vae_scale_factor
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(hidden_act="gelu", projection_dim=32))  # pooled output: 32 wide
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=_T5_VOCAB_SIZE,
            d_model=_FLUX_JOINT_ATTENTION_DIM,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as in FLUX.1's text_encoder_2
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    tokenizer = write_clip_tokenizer(directory / "tokenizer")
    tokenizer_2 = write_t5_tokenizer(directory / "tokenizer_2")
    assert len(tokenizer_2) <= _T5_VOCAB_SIZE
    components = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }
    if fill:
        pipe: DiffusionPipeline = FluxFillPipeline(**components)
    else:  # no IP-Adapter image encoder
        pipe = FluxPipeline(**components, image_encoder=None, feature_extractor=None)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def tiny_flux(directory: Path, *, guidance_embeds: bool = True) -> Path:
    """Save a tiny FLUX.1 text-to-image pipeline (`FluxPipeline`) to `directory`.

    Also the base for `FluxImg2ImgPipeline` / `FluxInpaintPipeline.from_pipe`. The VAE has one block, so
    vae_scale_factor is 1 and height/width need only be multiples of 2 (latents are packed in 2x2 patches); two
    latent channels pack to the transformer's 8 input channels. `guidance_embeds=True` mirrors FLUX.1-dev
    (`guidance_scale` is fed to the transformer as an embedding), False mirrors FLUX.1-schnell (`guidance_scale`
    is ignored). Run it with a small `max_sequence_length` (the T5 tokenizer pads every prompt to it).
    """
    return _save_flux(directory, fill=False, guidance_embeds=guidance_embeds)


def tiny_flux_fill(directory: Path, *, guidance_embeds: bool = True) -> Path:
    """Save a tiny FLUX.1-Fill inpainting/outpainting pipeline (`FluxFillPipeline`) to `directory`.

    The transformer sees, per packed token, the noisy latents (2 latent channels * 2x2 = 8), the masked image's
    latents (8) and the mask folded to latent resolution (vae_scale_factor**2 = 1 channel * 2x2 = 4): 20 inputs,
    8 outputs (real FLUX.1-Fill: 64 + 64 + 64 * 4 = 384 in, 64 out). `guidance_embeds=True` mirrors
    FLUX.1-Fill-dev; sizes and `max_sequence_length` as for `tiny_flux`.
    """
    return _save_flux(directory, fill=True, guidance_embeds=guidance_embeds)


# --- diffusers -> original (LDM) key mapping -------------------------------------------------------------------

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's "adm" vector embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_TOP = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _rename_module(key: str, table: dict[str, str]) -> str:
    """Rename the leading module path of `key` (everything before the parameter name) through `table`."""
    module, _, param = key.rpartition(".")
    for new, old in table.items():
        if module == new or module.startswith(new + "."):
            return old + module[len(new) :] + "." + param
    return key


def _unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel -> openaimodel.UNetModel names (`model.diffusion_model.` prefix added by the caller).

    The original UNet is flat lists: input_blocks[0] is conv_in, then per level `layers_per_block` [ResBlock,
    SpatialTransformer?] pairs plus one Downsample (`.0.op`), except the last level; output_blocks hold
    `layers_per_block + 1` pairs per level, the last one followed by an Upsample at index 1 (no attention) or 2.
    """
    per_level = layers_per_block + 1
    up_with_attention = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new: str
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            index = 1 + int(m[1]) * per_level + int(m[2])
            new = f"input_blocks.{index}.0." + _rename_module(m[3], _UNET_RESNET)
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * per_level + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * per_level + layers_per_block}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}." + _rename_module(m[2], _UNET_RESNET)
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * per_level + int(m[2])}.0." + _rename_module(m[3], _UNET_RESNET)
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * per_level + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            slot = 2 if block in up_with_attention else 1
            new = f"output_blocks.{block * per_level + layers_per_block}.{slot}.conv.{m[2]}"
        else:
            new = _rename_module(key, _UNET_TOP)
            if new == key:
                raise KeyError(f"no original-format name for UNet parameter {key!r}")
        out[new] = value
    return out


def _vae_to_original(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """AutoencoderKL -> ldm.models.autoencoder names (`first_stage_model.` prefix added by the caller).

    The original decoder numbers its up blocks from the lowest resolution upward (reverse of diffusers), and
    its mid attention uses 1x1 convs where diffusers uses linear layers.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new: str
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}".replace("conv_shortcut", "nin_shortcut")
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block = num_blocks - 1 - int(m[1])
            new = f"decoder.up.{block}.block.{m[2]}.{m[3]}".replace("conv_shortcut", "nin_shortcut")
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}".replace("conv_shortcut", "nin_shortcut")
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            new = f"{m[1]}.mid.attn_1." + _rename_module(m[2], _VAE_ATTENTION)
            if value.ndim == 2:  # linear [out, in] -> 1x1 conv [out, in, 1, 1]
                value = value[:, :, None, None]
        elif m := re.fullmatch(r"(encoder|decoder)\.(.+)", key):
            new = f"{m[1]}." + _rename_module(m[2], _VAE_TOP)
        elif key.split(".")[0] in ("quant_conv", "post_quant_conv"):
            new = key
        else:
            raise KeyError(f"no original-format name for VAE parameter {key!r}")
        out[new] = value
    return out


def _clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel -> the HF `transformer.text_model.*` names the original checkpoints embed verbatim.

    transformers >= 5.6 dropped the `text_model.` wrapper from CLIPTextModel; the checkpoint keeps it.
    """
    return {"transformer.text_model." + key.removeprefix("text_model."): value for key, value in state.items()}


def _open_clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection -> OpenCLIP names (`model.` prefix of `conditioner.embedders.1.` added here).

    OpenCLIP keeps q/k/v as one `in_proj_weight`/`in_proj_bias` (q, k, v stacked along dim 0) and the text
    projection as a bare [width, projection_dim] matrix applied as `x @ text_projection` (nn.Linear transposed).
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "text_projection.weight":
            out["model.text_projection"] = value.T.contiguous()
            continue
        key = key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            out["model.token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["model.positional_embedding"] = value
        elif m := re.fullmatch(r"final_layer_norm\.(weight|bias)", key):
            out[f"model.ln_final.{m[1]}"] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key):
            out[f"model.transformer.resblocks.{m[1]}." + _rename_module(m[2], _OPEN_CLIP_LAYER)] = value
        else:
            raise KeyError(f"no original-format name for OpenCLIP parameter {key!r}")
    for (layer, kind), qkv in fused.items():
        out[f"model.transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def diffusers_to_original(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder(s) as one original-format state dict (SD 1.x or SDXL layout)."""
    layers_per_block = pipe.unet.config.layers_per_block
    if not isinstance(layers_per_block, int):
        raise ValueError("the original UNet layout needs the same layers_per_block on every level")
    checkpoint = _prefixed("model.diffusion_model.", _unet_to_original(pipe.unet.state_dict(), layers_per_block))
    num_vae_blocks = len(pipe.vae.config.block_out_channels)
    checkpoint |= _prefixed("first_stage_model.", _vae_to_original(pipe.vae.state_dict(), num_vae_blocks))
    text_encoder = _clip_to_original(pipe.text_encoder.state_dict())
    if getattr(pipe, "text_encoder_2", None) is None:
        checkpoint |= _prefixed("cond_stage_model.", text_encoder)
    else:
        checkpoint |= _prefixed("conditioner.embedders.0.", text_encoder)
        checkpoint |= _prefixed("conditioner.embedders.1.", _open_clip_to_original(pipe.text_encoder_2.state_dict()))
    return checkpoint


def export_single_file(folder: Path, target: Path) -> Path:
    """Write the diffusers pipeline saved in `folder` as ONE original-format `.safetensors` checkpoint at `target`.

    Load it back with `<PipelineClass>.from_single_file(target, config=str(folder), local_files_only=True)`:
    the checkpoint carries only weights, the component configs (and tokenizers, scheduler) come from `folder`.
    """
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    checkpoint = {key: value.detach().contiguous() for key, value in diffusers_to_original(pipe).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(target), metadata={"format": "pt"})
    return target


def export_denoiser_file(folder: Path, target: Path) -> Path:
    """Write the UNet or FLUX transformer of the pipeline saved in `folder` as ONE `.safetensors` file in diffusers'
    key layout, the way fine-tuned FLUX transformers are often shared. (Black Forest Labs' own layout cannot be made
    tiny: diffusers' converter for it assumes the full 3072-wide transformer.)"""
    name = "transformer" if (folder / "transformer").is_dir() else "unet"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / name / "diffusion_pytorch_model.safetensors", target)
    return target


# --- IP-Adapters and a captioner -----------------------------------------------------------------------------------

TINY_IP_ADAPTER = "ip-adapter_tiny.safetensors"
_IMAGE_EMBED_DIM = 32  # the tiny CLIP image encoder's projection: what a plain IP-Adapter's image_proj reads


def tiny_ip_adapter(model: Path, directory: Path, *, weight_name: str = TINY_IP_ADAPTER, seed: int = 0) -> Path:
    """Save a plain IP-Adapter for the UNet of the tiny SD 1.5 or SDXL pipeline in `model` as
    `directory/models/<weight_name>`, with a tiny CLIP image encoder in `directory/models/image_encoder`: the
    layout of h94/IP-Adapter, which `load_ip_adapter(directory, subfolder="models", weight_name=...)` reads.

    The weights are in the original layout diffusers converts (`UNet2DConditionModel._load_ip_adapter_weights`):
    `image_proj.proj` (image embedding -> 4 tokens of cross-attention width) and `image_proj.norm`, and per
    cross-attention layer, numbered 1, 3, 5, ... in the UNet's processor order, `ip_adapter.<n>.to_k_ip` and
    `to_v_ip` ([hidden size, cross-attention width]). They are random and large enough to change the pictures.
    """
    unet_config = json.loads((model / "unet" / "config.json").read_text())
    unet = UNet2DConditionModel.from_config(unet_config)
    width = unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) / shape[-1] ** 0.5

    weights = {
        "image_proj.proj.weight": random(4 * width, _IMAGE_EMBED_DIM),
        "image_proj.proj.bias": torch.zeros(4 * width),
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    channels = unet.config.block_out_channels
    cross_attention = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    for index, name in enumerate(cross_attention):
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        for key in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{2 * index + 1}.{key}.weight"] = 3 * random(hidden, width)
    folder = directory / "models"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / weight_name))
    if not (folder / "image_encoder").is_dir():
        torch.manual_seed(0)
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                projection_dim=_IMAGE_EMBED_DIM,
            )
        )
        encoder.save_pretrained(folder / "image_encoder", safe_serialization=True)
    return directory


# BERT-style WordPiece vocabulary of the tiny captioner: BLIP's special tokens, then whole words to caption with.
_BLIP_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]",
    "a", "the", "of", "on", "in", "with", "dog", "cat", "beach", "sky", "tree", "house", "field", "river",
    "mountain", "city", "road", "boat", "flower", "red", "blue", "green", "old", "small", "sitting", "standing",
    "night", "snow", "forest", "bird", "man", "woman", "car", "bridge",
]  # fmt: skip


def tiny_blip(directory: Path) -> Path:
    """Save a tiny random BLIP captioning model (`BlipForConditionalGeneration` and its `BlipProcessor`) to
    `directory`, which `from_pretrained(directory)` loads. Its token ids follow BLIP's roles: [DEC] starts a
    caption (bos), [SEP] ends it, [PAD] pads. Random, it samples words from the vocabulary; the seed decides which.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(_BLIP_VOCAB)}, bos_token="[DEC]")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    text = BlipTextConfig(
        vocab_size=len(_BLIP_VOCAB),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=_BLIP_VOCAB.index("[DEC]"),
        eos_token_id=_BLIP_VOCAB.index("[CLS]"),
        pad_token_id=_BLIP_VOCAB.index("[PAD]"),
        sep_token_id=_BLIP_VOCAB.index("[SEP]"),
    )
    vision = BlipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
    model.save_pretrained(directory, safe_serialization=True)
    return directory
