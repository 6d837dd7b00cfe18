"""Samplers for the TRELLIS flow models."""
from .flow_euler import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, SamplerOutput,
                         time_schedule)
from .step_cache import StepCache

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SamplerOutput",
           "StepCache", "time_schedule"]
