"""mmsa.media: decoding audio and video files and finding faces, shared by training and live use.

This fourth package exists so that ``mmsa.training`` (datasets, ``mmsa-eval``) and
``mmsa.monitor`` (live windows, replay) turn media into model input with the same code:
the same ffmpeg decoding, the same face detector, the same frame selection. It imports
``mmsa.model`` (the feature contract), numpy, OpenCV and ffmpeg, never training or monitor.
"""

from .audio import load_audio, probe
from .clip import clip_sample, window_sample
from .errors import MediaError
from .faces import Box, FaceDetector, FaceTracker
from .video import read_frames

__all__ = [
    "Box", "FaceDetector", "FaceTracker", "MediaError", "clip_sample", "load_audio", "probe",
    "read_frames", "window_sample",
]
