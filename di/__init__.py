"""di: dependency injection for Python services.

Declare providers in a `Registry`, build a `Container` (it validates and
compiles the graph), and resolve inside scopes that are stack checkpoints.
See README.md and docs/design.md.
"""

from di.client import ClientContext
from di.container import Container
from di.errors import (
    AsyncProviderError,
    CheckpointClosedError,
    CircularDependencyError,
    DIError,
    DuplicateProviderError,
    GraphError,
    NoActiveScopeError,
    ProviderNotFoundError,
    ResourceOpenError,
    ScopeError,
    UnresolvableAnnotationError,
)
from di.inject import Depends, Injected, inject
from di.levels import Scope
from di.lifecycle import RefCounted
from di.registry import Named, Provider, Registry, default_registry, register_provider
from di.scopes import Checkpoint

__all__ = [
    "AsyncProviderError",
    "Checkpoint",
    "CheckpointClosedError",
    "CircularDependencyError",
    "ClientContext",
    "Container",
    "DIError",
    "Depends",
    "DuplicateProviderError",
    "GraphError",
    "Injected",
    "Named",
    "NoActiveScopeError",
    "Provider",
    "ProviderNotFoundError",
    "RefCounted",
    "Registry",
    "ResourceOpenError",
    "Scope",
    "ScopeError",
    "UnresolvableAnnotationError",
    "default_registry",
    "inject",
    "register_provider",
]
