"""dart's stages, composed from ``transformers``' SAM3 submodules (the ViT's rotation and the DETR decoder's loop
run in dart's own form, proved equal to ``transformers``': :mod:`dart.models.rope`, :mod:`dart.models.decoder`).

- :class:`TextStage`: CLIP text encoder + projection -> text features ``[C, 32, 256]`` (once per class list).
- :class:`BackboneStage`: ViT + the three FPN levels the detector uses (``4x, 2x, 1x`` of the patch grid; at
  1008 px: 288², 144², 72²), once per image whatever the number of classes. SAM3's fourth, 0.5x level is never
  used by the image detector and is not computed; without masks, only the 1x level is (``masks=False``).
- :class:`EncDecStage`: DETR encoder + decoder + box head + dot-product scoring, batched over
  ``images x classes``; :meth:`EncDecStage.masks` runs the mask decoder for selected (image, class) pairs only.

The prompt of every class is its text tokens followed by the geometry encoder's CLS token, exactly as in
Meta's SAM3 (``Sam3Processor``), where a text-only prompt still carries that token. ``transformers``'
``Sam3Model.forward`` only adds it when boxes are given; with an all-padding box prompt it computes the same
thing. The geometry token depends on the image, not on the class, so it is computed once per image. The
equivalence with ``Sam3Model.forward`` (one class at a time, padding box) is proved in
``tests/test_equivalence.py``.

The DART research code (``Sam3MultiClassPredictorFast``) does *not* append that token: its prompt is the text
tokens alone. ``prompt_mode="dart"`` reproduces that, for comparisons with its published numbers; the default,
``"meta"``, computes what SAM3 was trained and evaluated with.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.sam3.modeling_sam3 import Sam3SinePositionEmbedding, box_cxcywh_to_xyxy

from dart.models.decoder import decode
from dart.models.sam3 import capturing_graph
from dart.prompts import PAD_LABEL, check_prompt_mode

FPN_LEVELS = 3


class TextStage(nn.Module):
    """Token ids ``[C, T]`` + attention mask ``[C, T]`` -> projected text features ``[C, T, D]``."""

    def __init__(self, sam3: nn.Module):
        super().__init__()
        self.text_encoder = sam3.text_encoder
        self.text_projection = sam3.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return self.text_projection(hidden.last_hidden_state)


class BackboneStage(nn.Module):
    """``pixel_values [B, 3, H, W]`` -> FPN features ``(4x, 2x, 1x)`` of the patch grid, ``D_fpn`` channels.

    ``complex_rope``: in eager PyTorch, run the ViT layers with :func:`dart.models.rope.vit_layers` (the rotary
    embedding as one complex product, as Meta's ViT computes it; the same numbers, less time on a CPU). Traced,
    exported or compiled, the layers run as ``transformers`` has them."""

    def __init__(self, sam3: nn.Module, complex_rope: bool = False):
        super().__init__()
        vision = sam3.vision_encoder
        self.vit = vision.backbone
        self.fpn = nn.ModuleList(list(vision.neck.fpn_layers)[:FPN_LEVELS])
        self.patch_size = int(self.vit.config.patch_size)
        self.complex_rope = complex_rope

    def forward(self, pixel_values: torch.Tensor, masks: bool = True) -> tuple[torch.Tensor | None, ...]:
        """``masks=False``: only the ``1x`` level, the one detection reads, as ``(None, None, fpn_1x)``; the two finer
        levels feed only the mask decoder and cost about 4 % of the image part in fp32 and 2 % in bf16 on a CPU
        (BENCHMARKS.md, "The FPN levels only masks read")."""
        batch = pixel_values.shape[0]
        grid_h = pixel_values.shape[-2] // self.patch_size
        grid_w = pixel_values.shape[-1] // self.patch_size
        hidden = self.vit.embeddings(pixel_values)
        hidden = self.vit.layer_norm(hidden.view(batch, grid_h, grid_w, -1))
        if self.complex_rope and not capturing_graph():
            from dart.models.rope import vit_layers

            hidden = vit_layers(self.vit.layers, hidden)
        else:
            for layer in self.vit.layers:
                hidden = layer(hidden)
        spatial = hidden.permute(0, 3, 1, 2)
        if not masks:
            return (None,) * (len(self.fpn) - 1) + (self.fpn[-1](spatial),)
        return tuple(level(spatial) for level in self.fpn)


class EncDecStage(nn.Module):
    """DETR encoder-decoder over ``B`` images x ``C`` classes in one batch.

    Inputs: the three FPN levels ``[B, D, h_i, w_i]``, text features ``[C, T, D]`` and a boolean text mask
    ``[C, T]``. Outputs ``logits [B, C, Q]``, ``boxes [B, C, Q, 4]`` (normalised xyxy) and ``presence [B, C]``
    logits; with ``return_state=True`` also the encoder memory, decoder queries and prompts (``[B*C, ...]``)
    that :meth:`masks` needs.
    """

    def __init__(self, sam3: nn.Module, imgsz: int, prompt_mode: str = "meta"):
        super().__init__()
        self.prompt_mode = check_prompt_mode(prompt_mode)
        self.geometry_encoder = sam3.geometry_encoder
        self.detr_encoder = sam3.detr_encoder
        self.detr_decoder = sam3.detr_decoder
        self.scoring = sam3.dot_product_scoring
        self.mask_decoder = sam3.mask_decoder
        vision_config = sam3.config.vision_config
        grid = imgsz // int(vision_config.backbone_config.patch_size)
        sine = Sam3SinePositionEmbedding(num_position_features=vision_config.fpn_hidden_size // 2, normalize=True)
        shape = torch.Size([1, vision_config.fpn_hidden_size, grid, grid])
        self.register_buffer("pos_embed", sine(shape, torch.device("cpu"), torch.float32).clone(), persistent=False)

    def geometry_token(self, vision: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The geometry encoder's CLS token for an empty box prompt, ``[B, 1, D]`` (one per image).

        Runs SAM3's own geometry-encoder layers on the CLS token alone: with no valid box, the box tokens are
        fully masked and cannot change it, so their ROI pooling is skipped.
        """
        geo = self.geometry_encoder
        vision_flat = vision.flatten(2).transpose(1, 2)
        pos_flat = pos.flatten(2).transpose(1, 2)
        cls = geo.cls_embed.weight.view(1, 1, -1).expand(vision.shape[0], -1, -1)
        hidden = geo.prompt_layer_norm(geo.final_proj(cls))
        for layer in geo.layers:
            hidden = layer(prompt_feats=hidden, vision_feats=vision_flat, vision_pos_encoding=pos_flat, prompt_mask=None)
        return geo.output_layer_norm(hidden)

    def encode(self, vision: torch.Tensor, prompt: torch.Tensor,
               prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``transformers``' DETR encoder over ``B`` images ``[B, D, h, w]`` x ``C`` prompts (rows ``b * C + c``
        of ``prompt [B*C, T, D]``), with the first layer's self-attention run once per image instead of once per
        (image, class): it reads the image features alone, before any cross-attention to the prompt, so it is the
        same for every class (a sixth of the encoder's attention work per class). The encoder's own layers do the
        rest. Returns the memory ``[B*C, h*w, D]``, its position encoding and the spatial shapes, as the encoder's
        output has them."""
        encoder = self.detr_encoder
        batch, classes = vision.shape[0], prompt.shape[0] // vision.shape[0]
        pos = self.pos_embed.to(dtype=vision.dtype).expand(batch, -1, -1, -1)
        hidden, pos_flat, spatial_shapes = encoder._prepare_multilevel_features([vision], [pos])
        first = encoder.layers[0]
        attended = first.layer_norm1(hidden)
        with_pos = attended + pos_flat
        attended, _ = first.self_attn(query=with_pos, key=with_pos, value=attended)
        hidden = first.dropout(attended) + hidden  # [B, h*w, D]: one per image
        if classes > 1:
            hidden = hidden.repeat_interleave(classes, dim=0)
            pos_flat = pos_flat.repeat_interleave(classes, dim=0)
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=prompt_mask,
                                         encoder_hidden_states=prompt)
        crossed, _ = first.cross_attn(query=first.layer_norm2(hidden), key=prompt, value=prompt, attention_mask=mask)
        hidden = first.dropout(crossed) + hidden
        hidden = first.dropout(first.mlp(first.layer_norm3(hidden))) + hidden
        for layer in encoder.layers[1:]:
            hidden = layer(hidden, prompt_feats=prompt, vision_pos_encoding=pos_flat, prompt_cross_attn_mask=mask)
        return hidden, pos_flat, spatial_shapes

    def prompt_geometry(
        self,
        fpn_1x: torch.Tensor,
        classes: int,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        tokens_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The geometry part of every prompt, ``([B*C, G, D], mask [B*C, G])`` (rows ``b * C + c``), or None when
        there is none (``prompt_mode="dart"`` without exemplars).

        - ``boxes [B, C, K, 4]`` (normalised cx, cy, w, h on image ``b``) and ``box_labels [B, C, K]`` (1 positive,
          0 negative, -10 padding): exemplar boxes on the image being detected, run through SAM3's geometry encoder
          for the (image, class) rows that have any (its tokens: the boxes, then the CLS token); rows without get
          the CLS token alone, which is what the encoder gives for an all-padding prompt.
        - ``tokens [C, G, D]`` / ``tokens_mask [C, G]``: fixed prompt tokens (computed on a reference image); a class
          with any valid token uses them instead of the per-image geometry.
        """
        batch = fpn_1x.shape[0]
        pos = self.pos_embed.to(fpn_1x.dtype).expand(batch, -1, -1, -1)
        parts: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        if self.prompt_mode == "meta" or boxes is not None:
            geo = self.geometry_token(fpn_1x, pos).repeat_interleave(classes, dim=0)  # [B*C, 1, D]
            valid_cls = torch.ones_like if self.prompt_mode == "meta" else torch.zeros_like
            geo_mask = valid_cls(geo[..., 0], dtype=torch.bool)  # [B*C, 1]: the CLS token counts in "meta" mode
            if boxes is not None and box_labels is not None:
                count = boxes.shape[-2]
                flat_boxes = boxes.reshape(batch * classes, count, 4).to(torch.float32)
                flat_labels = box_labels.reshape(batch * classes, count)
                valid = flat_labels != PAD_LABEL
                rows = torch.nonzero(valid.any(-1)).flatten()
                if len(rows):
                    image_of = torch.div(rows, classes, rounding_mode="floor")
                    # in fp32 outside autocast: torchvision's ROI align takes no bf16 (transformers casts it to
                    # fp16, which CPU autocast refuses), and the few box tokens cost little at full precision
                    with torch.autocast(fpn_1x.device.type, enabled=False):
                        encoded = self.geometry_encoder(
                            box_embeddings=flat_boxes[rows],
                            box_mask=valid[rows],
                            box_labels=flat_labels[rows].clamp(min=0),
                            img_feats=[fpn_1x[image_of].float()],
                            img_pos_embeds=[pos[image_of].float()],
                        )
                    hidden = encoded.last_hidden_state
                    full = hidden.new_zeros(batch * classes, count + 1, hidden.shape[-1])
                    full_mask = torch.zeros(batch * classes, count + 1, dtype=torch.bool, device=fpn_1x.device)
                    full[:, :1] = geo.to(hidden.dtype)
                    full_mask[:, :1] = geo_mask
                    full[rows] = hidden
                    full_mask[rows] = encoded.attention_mask.bool()
                    geo, geo_mask = full, full_mask
            parts.append(geo)
            masks.append(geo_mask)
        if tokens is not None and tokens_mask is not None:
            fixed = tokens_mask.bool().any(-1).repeat(batch)  # [B*C]: classes whose tokens replace the geometry
            if masks:
                masks[-1] = masks[-1] & ~fixed[:, None]
            parts.append(tokens.repeat(batch, 1, 1))
            masks.append(tokens_mask.bool().repeat(batch, 1))
        if not parts:
            return None
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def reference_tokens(self, fpn_1x: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt tokens of exemplar ``boxes [K, 4]`` (normalised cx, cy, w, h) with ``labels [K]`` on the one
        image whose ``fpn_1x`` is given: ``(tokens [G, D] float32 cpu, mask [G] bool cpu)``, what the geometry
        encoder gives that image for those boxes (used as fixed tokens on other images)."""
        geometry = self.prompt_geometry(fpn_1x[:1], 1, boxes.to(fpn_1x.device)[None, None],
                                        labels.to(fpn_1x.device)[None, None])
        assert geometry is not None  # boxes always give geometry tokens
        return geometry[0][0].float().cpu(), geometry[1][0].cpu()

    def forward(
        self,
        fpn_4x: torch.Tensor,
        fpn_2x: torch.Tensor,
        fpn_1x: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        return_state: bool = False,
        boxes: torch.Tensor | None = None,
        box_labels: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        tokens_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Text features ``[C, T, D]`` + mask, and optionally exemplar boxes or fixed prompt tokens per class (see
        :meth:`prompt_geometry`) -> the outputs described on the class."""
        batch, classes = fpn_1x.shape[0], text.shape[0]
        prompt, mask_bc = text.repeat(batch, 1, 1), text_mask.repeat(batch, 1)  # row b * C + c
        geometry = self.prompt_geometry(fpn_1x, classes, boxes, box_labels, tokens, tokens_mask)
        if geometry is not None:
            prompt = torch.cat([prompt, geometry[0].to(prompt.dtype)], dim=1)
            mask_bc = torch.cat([mask_bc.bool(), geometry[1]], dim=1)
        memory, pos_flat, _ = self.encode(fpn_1x, prompt, mask_bc)
        decoded = decode(self.detr_decoder, memory, prompt, pos_flat, mask_bc, *fpn_1x.shape[-2:])
        queries = decoded.queries
        boxes = box_cxcywh_to_xyxy(decoded.boxes)
        logits = self.scoring(
            decoder_hidden_states=queries[None], text_features=prompt, text_mask=mask_bc
        )[0, ..., 0]
        presence = decoded.presence
        out = {
            "logits": logits.view(batch, classes, -1),
            "boxes": boxes.view(batch, classes, -1, 4),
            "presence": presence.view(batch, classes),
        }
        if return_state:
            out["memory"] = memory
            out["queries"] = queries
            out["prompt"] = prompt
            out["prompt_mask"] = mask_bc
        return out

    def masks(
        self,
        features: tuple[torch.Tensor, ...],
        state: dict[str, torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor,
        pairs: torch.Tensor,
    ) -> torch.Tensor:
        """Mask logits ``[P, Q, h_4x, w_4x]`` for the ``P`` (image, class) ``pairs`` ``[P, 2]`` only.

        This is the presence early exit for masks: the per-class pixel decoder, the costly part, runs only for
        classes that can produce a detection. ``state`` is what :meth:`forward` returned with
        ``return_state=True`` for the same ``text`` (whose prompts it holds).
        """
        classes = text.shape[0]
        flat = pairs[:, 0] * classes + pairs[:, 1]
        out = self.mask_decoder(
            decoder_queries=state["queries"][flat],
            backbone_features=[f[pairs[:, 0]] for f in features],
            encoder_hidden_states=state["memory"][flat],
            prompt_features=state["prompt"][flat],
            prompt_mask=state["prompt_mask"][flat],
        )
        return out.pred_masks
