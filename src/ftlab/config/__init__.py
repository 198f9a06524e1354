"""Config schemas, ConfigStore registration, composition and validation."""

from ftlab.config.schema import RunConfig
from ftlab.config.store import register_configs
from ftlab.config.validate import validate_config

__all__ = ["RunConfig", "register_configs", "validate_config"]
