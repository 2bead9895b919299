"""fanout: one upstream chat-completions stream per prompt, broadcast live to every viewer."""

__version__ = "0.1.0"
