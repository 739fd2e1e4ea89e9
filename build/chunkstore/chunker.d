build/chunkstore/chunker.o: chunkstore/chunker.c chunkstore/chunker.h \
 common/endian.h common/log.h common/macro.h
chunkstore/chunker.h:
common/endian.h:
common/log.h:
common/macro.h:
