"""Every limit on what segdemo takes in, declared once.

Each value is enforced where the data enters (the function named beside it) and listed,
with what a user sees, in docs/server.md. The memory a request takes follows from these:
photos are held as uint8 RGB (3 bytes a pixel), masks as uint8 train ids (1 byte a pixel),
and nothing at full resolution is held as float32 per class.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

MB = 2**20

# The command line ---------------------------------------------------------------------
# Numbers a command takes that size work or memory (segdemo/cli/*): checked while the
# arguments are parsed, before anything heavy is imported.
CLI_MAX_BATCH = 1024  # images per forward pass (eval, compare, bench, train --batch)
CLI_MAX_RESAMPLES = 100_000  # bootstrap resamples (a resamples x images matrix)
CLI_SEED_RANGE = (0, 2**32 - 1)  # numpy's and torch's seed range
CLI_LEVEL_RANGE = (1, 99)  # a pruning level asked for; the model then says which it has

# Photos -------------------------------------------------------------------------------
# Pillow's own decompression-bomb limit (about 89 Mpx, e.g. 9459x9459): images.load_image
# and ground_truth.read_mask refuse larger images from the header, before decoding.
PHOTO_MAX_PIXELS = 89_478_485
# One uploaded photo (the Streamlit uploader and .streamlit/config.toml maxUploadSize).
PHOTO_MAX_MB = 50
# Smaller "photos" (icons, 1x1 pixels) cannot show a street scene (the app's Segment page).
PHOTO_MIN_SIDE = 16
# Photos uploaded at once on the Segment page, and their decoded pixels together: later
# photos are left out with a message, so a page never holds more than this in memory.
PHOTOS_MAX_COUNT = 16
PHOTOS_MAX_MEGAPIXELS = 200
# One batch ZIP: photo pixels x checkpoints (bounds its size and the time it takes).
BATCH_MAX_MEGAPIXELS = 200

# Videos -------------------------------------------------------------------------------
VIDEO_MAX_MB = 100  # one clip, uploaded or given to video.probe_video
VIDEO_MAX_SECONDS = 30.0  # counted from the frames decoded, not the container's header
VIDEO_MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD; checked in the header and on every frame
VIDEO_MAX_STATED_FPS = 240.0  # a clip claiming more is refused (its frame rate is unusable)
VIDEO_FPS_SEGMENTED = 10.0  # frames segmented per second of video; faster clips are sampled

# Checkpoints (checked by checkpoints.load_checkpoint before anything is built) ---------
CHECKPOINT_MAX_MB = 500  # one checkpoint upload (the Checkpoints page)
# The JSON header of a .safetensors file (tensor table and metadata); the bundled
# checkpoints' are under 100 kB.
CHECKPOINT_HEADER_MAX_MB = 32
# The segdemo metadata document, as JSON text (the bundled ones are about 20 kB).
CHECKPOINT_METADATA_MAX_MB = 16
# Parameters and buffers of the model a checkpoint describes (the bundled ones: 2 M to
# 7 M; the paper's U-Net: 31 M; 200 M parameters take 800 MB in fp32).
MODEL_MAX_PARAMETERS = 200_000_000
# Input size (H, W): every photo is resized to it before the model sees it.
MODEL_MIN_INPUT_SIDE = 16
MODEL_MAX_INPUT_SIDE = 4096
# Compute of one forward pass at the input size, in GFLOPs: the paper's U-Net (base width
# 64) on a full 1024x2048 Cityscapes frame needs about 3100; the bundled models 6 to 15.
MODEL_MAX_GFLOPS = 4000
# Train ids are stored in 8-bit masks and 255 means "ignore".
MAX_CLASSES = 255
# A checkpoint's file name without ".safetensors" (uploads are cut to it, renames longer
# are refused): well inside the 255 bytes a file name may take.
CHECKPOINT_NAME_MAX_CHARS = 80

# A session of the app -----------------------------------------------------------------
MASK_CACHE_MB = 256  # masks a session keeps to redraw at once (uint8 at photo size)
# Megapixels a session may process an hour: a photo segmented by one checkpoint costs
# its pixels; a video costs each segmented frame's pixels per checkpoint. Enforced by
# SessionBudget, which the Segment page keeps per session.
SESSION_MEGAPIXELS_PER_HOUR = 4000.0
SESSION_WINDOW_SECONDS = 3600.0
# Segmenting jobs (a photo by one checkpoint, a ZIP, a video) running at once in the whole
# server, whatever the sessions: a job waits up to SERVER_WAIT_SECONDS for a free slot,
# then is refused with a message. With the caps above, this bounds the server's peak.
SERVER_MAX_JOBS = 2
SERVER_WAIT_SECONDS = 120.0


def _amount(megapixels: float) -> str:
    return f"{megapixels:,.0f}" if megapixels >= 10 else f"{megapixels:.2g}"


class BudgetExceeded(RuntimeError):
    """The session has used its budget; the message is one sentence for the user."""


class ServerBusy(BudgetExceeded):
    """Every job slot of the server stayed taken; one sentence for the user."""


@dataclass
class SessionBudget:
    """A sliding-window budget of work (megapixels) for one session.

    ``charge`` records work about to be done, or raises :class:`BudgetExceeded` (and
    records nothing) when it would take the last ``window_s`` seconds' total over
    ``limit``.
    """

    limit: float = SESSION_MEGAPIXELS_PER_HOUR
    window_s: float = SESSION_WINDOW_SECONDS
    spent: deque = field(default_factory=deque)  # (monotonic time, megapixels)

    def _forget(self, now: float) -> None:
        while self.spent and self.spent[0][0] <= now - self.window_s:
            self.spent.popleft()

    def used(self, now: float | None = None) -> float:
        """Megapixels charged within the window."""
        self._forget(time.monotonic() if now is None else now)
        return sum(amount for _, amount in self.spent)

    def charge(self, megapixels: float, what: str, now: float | None = None) -> None:
        """Record ``megapixels`` of work on ``what`` (a phrase: "segmenting photo.jpg").

        Raises:
            BudgetExceeded: the work would exceed the budget; the message says when
                enough of it frees up.
        """
        now = time.monotonic() if now is None else now
        used = self.used(now)
        if used + megapixels > self.limit:
            free_at = now + self.window_s
            freed = used + megapixels - self.limit
            for stamp, amount in self.spent:
                freed -= amount
                if freed <= 0:
                    free_at = stamp + self.window_s
                    break
            minutes = max(1, round((free_at - now) / 60))
            wait = (
                f"try again in about {minutes} min"
                if megapixels <= self.limit
                else "it is larger than a session's whole budget"
            )
            raise BudgetExceeded(
                f"This session has used its processing budget ({_amount(used)} of "
                f"{_amount(self.limit)} megapixels an hour), so {what} ({_amount(megapixels)} "
                f"megapixels) was not started; {wait}."
            )
        self.spent.append((now, float(megapixels)))
