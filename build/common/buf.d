build/common/buf.o: common/buf.c common/buf.h common/endian.h
common/buf.h:
common/endian.h:
