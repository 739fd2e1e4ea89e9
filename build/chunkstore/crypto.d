build/chunkstore/crypto.o: chunkstore/crypto.c chunkstore/crypto.h \
 common/log.h common/macro.h
chunkstore/crypto.h:
common/log.h:
common/macro.h:
