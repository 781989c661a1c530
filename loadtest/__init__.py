"""tensorwire.loadtest"""
