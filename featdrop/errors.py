"""The one error family. Every error a user can cause derives from ``FeatdropError``; its message names
the field (or file), the value and what is allowed. Command lines print that message without a traceback
and exit 2 (``featdrop.cli``); the Python API raises it.

Each class also derives from the built-in error it refines (``ValueError``, ``FileNotFoundError``,
``RuntimeError``), so code that catches those keeps working.
"""
from __future__ import annotations


class FeatdropError(Exception):
    """Base of every error a user can cause: bad input, missing data, a damaged or busy run directory."""


class ConfigError(FeatdropError, ValueError):
    """A configuration value is invalid (a config field, a command-line argument, a notebook parameter)."""


class DataNotFoundError(FeatdropError, FileNotFoundError):
    """Data is neither on disk nor downloadable; the message says where it looked and what to do."""


class CheckpointError(FeatdropError, RuntimeError):
    """A checkpoint cannot be read; the message names the file and what to do. Nothing is deleted."""


class RunLockedError(FeatdropError, RuntimeError):
    """Another live process is running in this out_dir."""


class NonFiniteLossError(FeatdropError, RuntimeError):
    """The loss (or a final metric) became non-finite; the message says which checkpoint is kept."""


class DiskError(FeatdropError, OSError):
    """A run's file could not be written (no space left, a read-only file system); the message names the file
    and what is kept."""


class DistributedError(FeatdropError, RuntimeError):
    """A run over several processes (torchrun) cannot go on: a process died or did not arrive; the message
    names the rank, what it waited for, what is kept and how to resume."""


class SpecError(ConfigError):
    """An encoder spec or a suppression-report argument is invalid."""


class WeightsNotFoundError(FeatdropError, FileNotFoundError):
    """Pretrained weights are not on disk and could not be downloaded; the message says where to put them."""
