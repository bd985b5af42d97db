// Placeholder translation unit replaced by the cpu-ops work: memory, elementwise and convert.
