"""Server-side tools of tool-calling requests: configuration and executor."""

from replicas.tools.config import (
    EmulatedToolConfig,
    HttpToolConfig,
    ToolConfig,
    ToolsConfig,
    parse_tools,
)
from replicas.tools.executor import (
    ToolCall,
    ToolError,
    ToolExecutor,
    ToolFailedError,
    ToolResult,
    UnknownToolError,
)

__all__ = [
    "EmulatedToolConfig",
    "HttpToolConfig",
    "ToolCall",
    "ToolConfig",
    "ToolError",
    "ToolExecutor",
    "ToolFailedError",
    "ToolResult",
    "ToolsConfig",
    "UnknownToolError",
    "parse_tools",
]
