"""Samplers for the TRELLIS flow models."""
from .flow_euler import (FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, SamplerOutput,
                         time_schedule)

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SamplerOutput",
           "time_schedule"]
