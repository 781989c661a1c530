"""tensorwire.server"""
