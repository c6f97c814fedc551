# Compiled types for request.py: the request target's path as a C-level function (the dispatcher's gate).

cpdef bytes request_path(bytes url)
