build/chunkstore/index.o: chunkstore/index.c chunkstore/index.h \
 chunkstore/pack.h chunkstore/backend.h chunkstore/format.h common/buf.h \
 common/endian.h common/fs-util.h common/log.h common/macro.h
chunkstore/index.h:
chunkstore/pack.h:
chunkstore/backend.h:
chunkstore/format.h:
common/buf.h:
common/endian.h:
common/fs-util.h:
common/log.h:
common/macro.h:
