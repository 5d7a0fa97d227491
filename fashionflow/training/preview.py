"""Training-time previews and the pipeline folder inside checkpoints (rank 0 only).

Training itself reads precomputed latents and CLIP tokens; the frozen VAE and CLIP image
encoder are only needed to make checkpoints complete pipeline folders and to render preview
videos. They are loaded from `encoders.*`; when that fails (e.g. weights not downloaded),
training still runs, checkpoints hold unet/, adapter/ and scheduler/ with a note, and no
previews are rendered. Previews use a fast sampler (`train.sample_sampler`, `train.sample_steps`;
released: 1000-step DDPM) from a fixed image: `train.validation_image`, else the first
training clip's conditioning image; fixed seed `sample.seed`, so previews are comparable.
A model with references (`model.max_references`) previews the first training clip with up to
that many of its valid reference candidates. TensorBoard gets the conditioning image (beside
its references), a strip of frames and,
when moviepy is installed (tensorboardX needs it for videos), the video; RUN/samples/ the mp4.
A pose-guided model (`model.pose_guider`) previews the first training clip driven by its own
stored poses, and TensorBoard also gets the driving skeletons above the frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fashionflow.config import FashionFlowConfig
from fashionflow.distributed import DistributedContext, log


def _load_image(path: str, height: int, width: int) -> torch.Tensor:
    """An image file as uint8 [3, H, W], resized (bilinear, as the projection does) to the data size."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((width, height), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _has_moviepy() -> bool:
    import importlib.util

    return importlib.util.find_spec("moviepy") is not None


class PreviewMaker:
    """Holds the frozen encoders and the validation image; renders previews, builds pipelines."""

    def __init__(self, cfg: FashionFlowConfig, dataset, run_dir: Path, ctx: DistributedContext):
        from fashionflow.encoders import MissingWeightsError, load_image_encoder, load_vae

        self.cfg, self.run_dir, self.ctx = cfg, Path(run_dir), ctx
        try:
            self.vae = load_vae(cfg.encoders, device=ctx.device)
            self.image_encoder, self.feature_extractor = load_image_encoder(cfg.encoders, device=ctx.device)
            self.has_encoders = True
        except MissingWeightsError as error:
            self.vae = self.image_encoder = self.feature_extractor = None
            self.has_encoders = False
            log(f"note: {str(error).splitlines()[0]}\n      training continues; checkpoints will hold unet/, "
                f"adapter/ and scheduler/ (no vae/ or image_encoder/) and no preview videos are rendered", ctx)
        if cfg.train.validation_image:
            self.image = _load_image(cfg.train.validation_image, cfg.data.height, cfg.data.width)
            self.image_name = Path(cfg.train.validation_image).name
        else:
            self.image, self.image_name = dataset[0]["image"], dataset.names[0]
        self.references = []  # uint8 [3, H, W] each
        self.reference_keypoints = None  # their poses [18, 3] each, for model.reference_pose_routing
        if cfg.model.max_references > 0 and not cfg.train.validation_image:
            first = dataset[0]
            valid = first["reference_valid"].nonzero().flatten()[:cfg.model.max_references]
            self.references = [first["reference_images"][i] for i in valid]
            if "reference_keypoints" in first:
                self.reference_keypoints = [[first["reference_keypoints"][i].numpy() for i in valid]]
        # a pose-guided model previews the first training clip driven by its own poses (they are in
        # its frame: no alignment); a validation image has no poses of its own: pose-free preview
        self.poses = (dataset[0]["keypoints"].numpy() if cfg.model.pose_guider and not cfg.train.validation_image
                      else None)

    def make_pipeline(self, unet, adapter, sampler: str | None = None):
        """A FashionFlowPipeline around the live modules (scheduler: `sampler` or `sample.sampler`)."""
        from fashionflow.pipeline import FashionFlowPipeline

        pipeline = FashionFlowPipeline.from_parts(self.cfg, unet, adapter, self.vae, self.image_encoder,
                                                  self.feature_extractor, sampler=sampler)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    @torch.no_grad()
    def make(self, unet, adapter, step: int, writer) -> Path | None:
        """Render one preview video; log it (and its conditioning image) to TensorBoard and as mp4."""
        if not self.has_encoders:
            return None
        from fashionflow.video_io import contact_sheet, write_mp4

        cfg = self.cfg
        pipeline = self.make_pipeline(unet, adapter, cfg.train.sample_sampler)
        was_training = unet.training, adapter.training
        unet.eval(), adapter.eval()
        try:
            generator = torch.Generator(self.ctx.device).manual_seed(cfg.sample.seed)
            references = [[r.float() / 255.0 for r in self.references]] if self.references else None
            output = pipeline(self.image.float() / 255.0, num_frames=cfg.sample.num_frames, reference_images=references,
                              num_inference_steps=cfg.train.sample_steps, guidance_scale=cfg.sample.guidance_scale,
                              init_strength=cfg.sample.init_strength,
                              routed_init_strength=cfg.sample.routed_init_strength, generator=generator,
                              output_type="np", poses=self.poses, align=False,
                              reference_keypoints=self.reference_keypoints if references else None)
            frames = output.frames[0]  # f h w 3 uint8
        finally:
            unet.train(was_training[0]), adapter.train(was_training[1])
        path = write_mp4(self.run_dir / "samples" / f"step-{step:07d}.mp4", frames, fps=cfg.sample.fps)
        if writer is not None:
            sheet = torch.cat([self.image, *self.references], dim=2)  # the image, then its references: 3 H (1+r)W
            writer.add_image("preview/conditioning_image", sheet.numpy(), step, dataformats="CHW")
            writer.add_image("preview/frames", contact_sheet(frames), step, dataformats="HWC")
            if output.poses is not None:  # the driving skeletons above the frames they drove
                from fashionflow.generate import pose_strip

                writer.add_image("preview/poses", pose_strip(output.poses[0], frames), step, dataformats="HWC")
            if _has_moviepy():  # tensorboardX encodes videos (GIF) with moviepy, an optional package
                video = torch.from_numpy(frames).permute(0, 3, 1, 2).unsqueeze(0).numpy()  # 1 f 3 h w uint8
                writer.add_video("preview/video", video, step, fps=cfg.sample.fps)
        log(f"preview {path} (conditioning image {self.image_name}"
            f"{f', {len(self.references)} references' if self.references else ''})", self.ctx)
        return path
