"""tensorwire's private protobuf descriptor pool.

Our `inference.*` messages live here rather than in protobuf's default pool, so
tensorwire imports cleanly beside tritonclient or MLServer, which register the
same names in the default pool.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
