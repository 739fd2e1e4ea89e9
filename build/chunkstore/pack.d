build/chunkstore/pack.o: chunkstore/pack.c chunkstore/pack.h \
 chunkstore/backend.h chunkstore/format.h common/buf.h \
 chunkstore/crypto.h common/endian.h common/hex.h common/log.h \
 common/macro.h
chunkstore/pack.h:
chunkstore/backend.h:
chunkstore/format.h:
common/buf.h:
chunkstore/crypto.h:
common/endian.h:
common/hex.h:
common/log.h:
common/macro.h:
