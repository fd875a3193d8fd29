"""edgeprune's version, in a module of its own so that any module can name it without importing the
package's public API (`edgeprune.Pruner`) along with it."""

__version__ = "0.1.0"
