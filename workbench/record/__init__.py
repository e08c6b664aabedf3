"""Recording per-head attention statistics without building N x N patterns."""

from workbench.record.config import RecorderConfig
from workbench.record.record import AttentionRecord
from workbench.record.recorder import AttentionRecorder, record_attention

__all__ = ["AttentionRecord", "AttentionRecorder", "RecorderConfig", "record_attention"]
