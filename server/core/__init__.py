"""Sans-I/O core: pure state machines and codecs. No asyncio, aiohttp, redis or openai here."""
