"""tensorwire.client"""
