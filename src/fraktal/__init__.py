"""fraktal: a distributed Mandelbrot renderer.

A master splits a render job into tiles and leases batches of tiles (chunks)
to workers over TCP; the workers compute with every core they may use.
"""

__version__ = "0.1.0"
